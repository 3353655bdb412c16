"""The bridge's end of the plugin link: receive what a plugin streams and rebuild the session.

A :class:`PluginReceiver` binds a ZeroMQ PULL socket (loopback by default) and collects, by
sample position: the audio (so any block size, varying or not, yields the same samples), the
transport of every block (tempo steps become a stepped tempo map; jumps — loops, seeks — are
followed and recorded), and the plugin's parameter automation (lanes named by parameter id,
stepped at their exact sample). :meth:`PluginReceiver.session` turns that into the inputs of an
offline bounce, so a session played through the plugin renders exactly like the bounce of the
same song and MIDI file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import zmq

from bendbridge.protocol import AudioBlock, Bye, FeatureFrame, Transport, decode
from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignatureMap

__all__ = ["PluginReceiver", "RecordedSession"]


@dataclass
class RecordedSession:
    audio: Path  # float32 WAV of the timeline audio
    rate: int
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane]
    jumps: list[tuple[int, int]] = field(default_factory=list)


class PluginReceiver:
    def __init__(self, url: str = "tcp://127.0.0.1:5557"):
        self.sock = zmq.Context.instance().socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.bind(url)
        self.url = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.rate: int | None = None
        self.chunks: dict[int, np.ndarray] = {}
        self.transports: list[Transport] = []
        self.transport_pos: list[int] = []
        self.events: dict[str, list[tuple[int, float]]] = {}
        self.jumps: list[tuple[int, int]] = []
        self.position = 0  # where the next block is expected
        self.errors = 0
        self.last_error = ""
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="plugin-receiver")

    def __enter__(self) -> PluginReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            try:
                self._handle(decode(self.sock.recv()).message)
            except Exception as e:  # noqa: BLE001 - one bad message must not stop the link
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"

    def _handle(self, m) -> None:
        if isinstance(m, Transport):
            if self.transports and m.sample != self.position:
                self.jumps.append((self.position, m.sample))
            self.transports.append(m)
            self.transport_pos.append(m.sample)
            self.position = m.sample
        elif isinstance(m, AudioBlock):
            self.rate = m.rate
            self.chunks[m.sample] = m.data
            self.position = m.sample + m.data.shape[1]
        elif isinstance(m, FeatureFrame):
            for k, v in m.features.items():
                if k.startswith("param:"):
                    self.events.setdefault(k[6:], []).append((m.sample, v))
        elif isinstance(m, Bye):
            self.done.set()

    def session(self, folder: Path) -> RecordedSession:
        """Write the timeline audio to ``folder/audio.wav`` and build tempo map, meter and lanes."""
        from pedalboard.io import AudioFile

        if not self.chunks or self.rate is None:
            raise BendbridgeError("plugin", "no audio received from the plugin")
        rate = self.rate
        end = max(s + a.shape[1] for s, a in self.chunks.items())
        chans = next(iter(self.chunks.values())).shape[0]
        audio = np.zeros((chans, end), np.float32)
        for s, a in sorted(self.chunks.items()):
            audio[:, s : s + a.shape[1]] = a
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "audio.wav"
        with AudioFile(str(path), "w", rate, chans, bit_depth=32) as f:
            f.write(audio)
        # tempo: the blocks in timeline order, a step wherever the tempo changes
        by_pos = sorted(zip(self.transport_pos, (t.tempo for t in self.transports)))
        points: list[TempoPoint] = []
        for s, bpm in by_pos:
            if not points or Fraction(bpm) != points[-1].bpm:
                points.append(TempoPoint(Fraction(s, rate), Fraction(bpm)))
        tempo = TempoMap(points)
        sigs, last = [], None
        for t in sorted(self.transports, key=lambda t: t.sample):
            if (t.ts_num, t.ts_den) != last:
                sigs.append((tempo.beats_at(Fraction(t.sample, rate)), t.ts_num, t.ts_den))
                last = (t.ts_num, t.ts_den)
        meter = TimeSignatureMap.from_beat_changes(sigs or [(0, 4, 4)])
        lanes = {}
        for name, evs in self.events.items():
            pts = {}
            for s, v in evs:  # a value re-sent at a jump replaces nothing: same sample, same value
                pts[s] = v
            lanes[name] = AutomationLane(
                name, [LanePoint(Fraction(s, rate), v, 1) for s, v in sorted(pts.items())], "seconds"
            )
        return RecordedSession(path, rate, tempo, meter, lanes, list(self.jumps))
