"""The bridge's end of the plugin link: receive what a plugin streams and rebuild the session.

A :class:`PluginStream` collects, by sample position, what a plugin inside the DAW sends (the
native LV2 plugin or the Python streaming plugin; the messages are the same): the audio (so any
block size, varying or not, yields the same samples; a place played twice keeps its latest take,
so a recording is best ended with one pass through the song: a host may fade audio in after a
locate and out at a stop),
the transport of every block (jumps — loops, locates — are followed and recorded), and the
plugin's parameters. A :class:`PluginReceiver` feeds a stream from a ZeroMQ PULL socket (loopback
by default). :meth:`PluginStream.session` turns a stream into the inputs of an offline bounce, so
a session played through the plugin renders like the bounce of the same song and tempo map.

- **Tempo and meter.** Where the host gave its bar and beat (LV2 ``time:bar``/``time:barBeat``),
  the tempo map is fitted to those positions (:mod:`bendbridge.bridge.host_tempo`) and each meter
  starts at the bar the host counts it from. Otherwise the reported tempo steps where it was
  reported and a meter change is placed on the bar line of the bar it was reported in (a host
  reports a change at the first block that starts at or after it).
- **Parameters.** ``param:ID`` events step at their exact sample; ``control:ID`` values (a control
  port's value at the start of each run()) become the lane the host played, ramps included
  (:mod:`bendbridge.bridge.host_controls`).

A record that cannot be decoded, or that arrives out of order, is named in
:attr:`PluginStream.problems` and the stream goes on.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zmq

from bendbridge.protocol import AudioBlock, Bye, FeatureFrame, Packet, Transport, decode
from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.security import is_loopback

from .host_controls import control_lane
from .host_tempo import anchors_of, meter_from_bars, tempo_through
from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap

if TYPE_CHECKING:
    from .recording import RecordingWriter

__all__ = ["PluginReceiver", "PluginStream", "RecordedSession"]

MAX_PROBLEMS = 100  # problems kept by name; more are only counted


@dataclass
class RecordedSession:
    audio: Path  # float32 WAV of the timeline audio
    rate: int
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane]
    jumps: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class PluginStream:
    """Everything a plugin has streamed, by sample position at the host's rate."""

    rate: int | None = None
    audio_end: int = 0  # one past the last sample of audio received
    transports: list[Transport] = field(default_factory=list)
    events: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # parameter -> (sample, value)
    controls: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # control port -> (sample, value)
    jumps: list[tuple[int, int]] = field(default_factory=list)  # (expected sample, reported sample)
    position: int = 0  # where the next block is expected
    records: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    ended: bool = False
    _last_seq: dict[str, int] = field(default_factory=dict)
    _audio: np.ndarray | None = None  # float32 [C, capacity]: the timeline's audio so far

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def add_bytes(self, data: bytes) -> Packet | None:
        """One record off the wire; a record that is not a valid packet is named and skipped (None)."""
        self.records += 1
        try:
            packet = decode(data)
        except BendbridgeError as e:
            self.problem(f"record {self.records}: not a valid protocol packet ({e})")
            return None
        self.add(packet)
        return packet

    def add(self, packet: Packet) -> None:
        env, m = packet.envelope, packet.message
        sender = env.id.rsplit("-", 1)[0]
        last = self._last_seq.get(sender)
        if last is not None and env.seq <= last:
            self.problem(f"record {self.records} ({m.TYPE} seq {env.seq}) arrived after seq {last}: out of order")
        self._last_seq[sender] = max(env.seq, last or 0)
        if isinstance(m, Transport):
            if self.transports and m.sample != self.position:
                self.jumps.append((self.position, m.sample))
            self.transports.append(m)
            self.position = m.sample
            self.rate = self.rate or env.rate
        elif isinstance(m, AudioBlock):
            self._add_audio(m)
        elif isinstance(m, FeatureFrame):
            for k, v in m.features.items():
                kind, _, name = k.partition(":")
                if kind == "param":
                    self.events.setdefault(name, []).append((m.sample, v))
                elif kind == "control":
                    self.controls.setdefault(name, []).append((m.sample, v))
        elif isinstance(m, Bye):
            self.ended = True

    def _add_audio(self, m: AudioBlock) -> None:
        self.rate = m.rate
        end = m.sample + m.data.shape[1]
        if self._audio is None or self._audio.shape[0] != m.data.shape[0]:
            if self._audio is not None:
                self.problem(f"audio at sample {m.sample} has {m.data.shape[0]} channels, not {self._audio.shape[0]}")
                return
            self._audio = np.zeros((m.data.shape[0], max(end, 1 << 16)), np.float32)
        if end > self._audio.shape[1]:
            grown = np.zeros((self._audio.shape[0], max(end, 2 * self._audio.shape[1])), np.float32)
            grown[:, : self.audio_end] = self._audio[:, : self.audio_end]
            self._audio = grown
        self._audio[:, m.sample : end] = m.data  # a place played again keeps its latest take
        self.audio_end = max(self.audio_end, end)
        self.position = end

    def audio(self) -> np.ndarray:
        """The timeline's audio from sample 0, float32 [C, N] (silence where nothing came)."""
        if self._audio is None:
            return np.zeros((2, 0), np.float32)
        return self._audio[:, : self.audio_end]

    # ------------------------------------------------------------------ the session
    def session(self, folder: Path) -> RecordedSession:
        """Write the timeline audio to ``folder/audio.wav`` and build tempo map, meter and lanes."""
        if not self.audio_end or self.rate is None:
            raise BendbridgeError("plugin", "no audio received from the plugin")
        path = self._write_audio(Path(folder) / "audio.wav")
        tempo = self._tempo()
        return RecordedSession(path, self.rate, tempo, self._meter(tempo), self._lanes(), list(self.jumps))

    def _write_audio(self, path: Path) -> Path:
        from pedalboard.io import AudioFile

        audio = self.audio()
        chans = audio.shape[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        with AudioFile(str(path), "w", self.rate, chans, bit_depth=32) as f:
            f.write(audio)
        return path

    def _tempo(self) -> TempoMap:
        """Where the host gave bar and beat, the tempo map fitted to those positions (see
        :mod:`bendbridge.bridge.host_tempo`); else a step at each block whose tempo differs."""
        barred = self._barred()
        if len(barred) >= 2:
            try:
                return tempo_through(anchors_of(barred), self.rate, meter_from_bars(barred))
            except BendbridgeError as e:
                self.problem(f"the host's bar and beat positions make no tempo map ({e}); its tempo is used")
        points: list[TempoPoint] = []
        for t in sorted(self.transports, key=lambda t: t.sample):
            if not points or Fraction(t.tempo) != points[-1].bpm:
                points.append(TempoPoint(Fraction(t.sample, self.rate), Fraction(t.tempo)))
        return TempoMap(points)

    def _rolling(self) -> list[Transport]:
        """Rolling transports in timeline order, one per sample (a loop plays a place again)."""
        by_sample = {t.sample: t for t in self.transports if t.playing}
        return [by_sample[s] for s in sorted(by_sample)]

    def _barred(self) -> list[Transport]:
        """Rolling transports where the host gave its bar and beat, in timeline order."""
        return [t for t in self._rolling() if t.bar is not None and t.bar_beat is not None]

    def _meter(self, tempo: TempoMap) -> TimeSignatureMap:
        """Meter changes at the bar the host counts them from; without bar numbers, each is placed on
        the bar line of the bar it was reported in."""
        barred = self._barred()
        if len(barred) >= 2:
            return meter_from_bars(barred)
        ordered = sorted(self.transports, key=lambda t: t.sample)
        if not ordered:
            return TimeSignatureMap()
        sigs = [TimeSignature(1, ordered[0].ts_num, ordered[0].ts_den)]
        for t in ordered[1:]:
            if (t.ts_num, t.ts_den) != (sigs[-1].num, sigs[-1].den):
                bar = TimeSignatureMap(sigs).bar_beat(tempo.beats_at(Fraction(t.sample, self.rate))).bar
                sigs = [s for s in sigs if s.bar < bar] + [TimeSignature(bar, t.ts_num, t.ts_den)]
        return TimeSignatureMap(sigs)

    def _lanes(self) -> dict[str, AutomationLane]:
        """Parameter events step at their sample; control-port values become the lane the host
        played (ramps rebuilt, see :mod:`bendbridge.bridge.host_controls`)."""
        lanes = {}
        for name, evs in self.events.items():
            pts = dict(evs)  # a value re-sent at a jump replaces nothing: same sample, same value
            points = [LanePoint(Fraction(s, self.rate), v, 1) for s, v in sorted(pts.items())]
            lanes[name] = AutomationLane(name, points, "seconds")
        for name, heard in self.controls.items():
            lanes[name] = control_lane(name, heard, self.rate)
        return lanes


class PluginReceiver:
    """Receives a plugin's stream on a ZeroMQ PULL socket, on a background thread, into ``stream``."""

    def __init__(self, url: str = "tcp://127.0.0.1:5557", record_to: RecordingWriter | None = None):
        """``record_to``: a :class:`~bendbridge.bridge.recording.RecordingWriter` that keeps every
        record as it arrives (closed with the receiver)."""
        if not is_loopback(url):
            raise BendbridgeError(
                "--link", f"{url}: the plugin link listens on loopback only (e.g. tcp://127.0.0.1:5557), beside the DAW"
            )
        self.sock = zmq.Context.instance().socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        try:
            self.sock.bind(url)
        except zmq.ZMQError as e:
            self.sock.close(0)
            raise BendbridgeError("--link", f"cannot listen on {url}: {e}") from None
        self.url = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stream = PluginStream()
        self.recording = record_to
        self.on_audio: Callable[[AudioBlock], None] | None = None  # called on the receiving thread
        self.done = threading.Event()  # set when the plugin says bye
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="plugin-receiver")

    def __enter__(self) -> PluginReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot(self) -> PluginStream:
        """A copy of the stream so far, taken between two records."""
        with self._lock:
            return copy.deepcopy(self.stream)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)
        if self.recording is not None:
            self.recording.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                data = self.sock.recv()
                if self.recording is not None:
                    self.recording.add(data)
                with self._lock:
                    packet = self.stream.add_bytes(data)
                if self.on_audio is not None and packet is not None and isinstance(packet.message, AudioBlock):
                    self.on_audio(packet.message)
                if self.stream.ended:
                    self.done.set()
