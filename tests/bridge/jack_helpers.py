"""A real JACK server for tests (jackd -d dummy) and a client that plays a known signal into it."""

from __future__ import annotations

import bisect
import os
import shutil
import subprocess
import threading
import time
import uuid
from fractions import Fraction as F

import numpy as np
import pytest

from bendbridge.bridge.mtc import frames_timecode

RATE = 48_000
BRACKET = 0.0005  # seconds: the widest wall-clock bracket around a sampled transport frame


def start_jack_server(period: int = 512, name: str | None = None):
    """Starts jackd on the dummy driver (``period`` frames a cycle); yields the jack module; stops it."""
    if shutil.which("jackd") is None:
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail("jackd is required (apt install jackd2)")
        pytest.skip("jackd is not installed (.ci/run installs jackd2)")
    jack = pytest.importorskip("jack")
    name = name or f"bbaudio-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        ["jackd", "-n", name, "-d", "dummy", "-r", str(RATE), "-p", str(period)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["JACK_DEFAULT_SERVER"] = name
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                jack.Client("probe", no_start_server=True).close()
                break
            except jack.JackError:
                assert time.monotonic() < deadline, "jackd did not start"
                time.sleep(0.1)
        yield jack
    finally:  # also when it does not start, or the generator is closed early (a failed test)
        proc.terminate()
        proc.wait(10)
        os.environ.pop("JACK_DEFAULT_SERVER", None)


class Player:
    """A JACK client that plays ``audio`` once from its output port, noting the frame it started at."""

    def __init__(self, jack, audio: np.ndarray):
        self.client = jack.Client("player", no_start_server=True)
        self.port = self.client.outports.register("out_1")
        self.audio, self.pos, self.start_frame, self.go = audio, 0, None, False
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        out = self.port.get_array()
        out[:] = 0
        if not self.go or self.pos >= len(self.audio):
            return
        if self.start_frame is None:
            self.start_frame = self.client.last_frame_time
        chunk = self.audio[self.pos : self.pos + frames]
        out[: len(chunk)] = chunk
        self.pos += len(chunk)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class MtcWriter:
    """A JACK client that writes MTC quarter frames onto its MIDI output at exact sample positions:
    from ``code`` seconds (rate code ``rate``) starting at JACK frame time ``start``, for ``length``
    seconds; the test reads the true position at any frame time from it."""

    def __init__(self, jack):
        self.client = jack.Client("mtcgen", no_start_server=True)
        self.port = self.client.midi_outports.register("out")
        self.plan: tuple[int, F, int, float] | None = None  # (start frame time, code s, rate code, length s)
        self.client.set_process_callback(self._process)
        self.client.activate()

    def play(self, code: F, rate: int, length: float, delay: float = 0.05) -> None:
        start = self.client.frame_time + int(delay * RATE)
        self.plan = (start, code, rate, length)

    def _process(self, frames):
        self.port.clear_buffer()
        if self.plan is None:
            return
        start, code, rate, length = self.plan
        fps = {0: F(24), 1: F(25), 2: F(30000, 1001), 3: F(30)}[rate]
        first_frame = round(code * fps)  # the code starts on a frame boundary
        cycle = self.client.last_frame_time
        q = max(0, -(-(cycle - start) * 4 * fps // RATE))  # the first quarter frame in this cycle
        while True:
            at = start + q * RATE / (4 * fps)
            if at >= cycle + frames or at - start >= length * RATE:
                break
            frame = first_frame + (q // 8) * 2  # each group of eight carries the time of its piece 0
            h, m, s, f = frames_timecode(frame, rate)
            piece = q % 8
            value = [f & 15, f >> 4, s & 15, s >> 4, m & 15, m >> 4, h & 15, (h >> 4) | rate << 1][piece]
            self.port.write_midi_event(int(at) - cycle, bytes([0xF1, piece << 4 | value]))
            q += 1

    def truth(self, frame_time: int) -> float | None:
        start, code, rate, length = self.plan
        if not 0 <= frame_time - start < length * RATE:
            return None
        fps = {0: F(24), 1: F(25), 2: F(30000, 1001), 3: F(30)}[rate]
        return float(F(round(code * fps)) / fps) + (frame_time - start) / RATE

    def close(self):
        self.client.deactivate()
        self.client.close()


class Recorder:
    """Stands in for the render client: keeps every frame request with the wall time it was sent."""

    def __init__(self):
        self.sent = []

    def send(self, request, pos=None):
        self.sent.append((time.time(), request))


class TransportLog:
    """Samples ``client``'s view of JACK transport every 2 ms from a thread: (wall time, rolling,
    the transport frame now, the timebase master's BBT fields or None). The frame is read between
    two reads of the wall clock, and kept only when they are within :data:`BRACKET` of each other."""

    def __init__(self, jack, client, period: int):
        self.jack, self.client, self.period = jack, client, period
        self.log: list[tuple[float, int, int, tuple | None]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop.is_set():
            rolling = self.client.transport_state == self.jack.ROLLING
            before = time.time()
            frame = self.client.transport_frame  # the frame now …
            after = time.time()  # … and when: a read interrupted between the clocks is not a sample
            _, pos = self.client.transport_query()
            if after - before > BRACKET:
                time.sleep(0.002)
                continue
            wall = (before + after) / 2
            bbt = None
            if "bar" in pos:
                bbt = (pos["bar"], pos["beat"], pos["tick"], pos.get("bar_start_tick", 0.0), pos["ticks_per_beat"],
                       pos["beats_per_bar"], pos["beat_type"], pos["beats_per_minute"])  # fmt: skip
            self.log.append((wall, int(rolling), int(frame), bbt))
            time.sleep(0.002)

    def frame_at(self, wall: float) -> float | None:
        """The transport frame at wall time ``wall``, interpolated between two samples of one
        rolling stretch (None across a relocation or a stop)."""
        i = bisect.bisect(self.log, (wall, 9, 0, None))
        if i == 0 or i >= len(self.log):
            return None
        (t0, r0, f0, _), (t1, r1, f1, _) = self.log[i - 1], self.log[i]
        if not (r0 and r1 and 0 <= f1 - f0 <= (t1 - t0) * RATE + 2 * self.period):
            return None
        return f0 + (wall - t0) * RATE

    def at_due(self, sent: list) -> list[tuple[float, float, float, object]]:
        """(wall time sent, frame then, frame at due time, request) of each request whose due time the
        transport reached rolling from where it was when the request was sent (no relocation or
        stop in between)."""
        out = []
        for wall, req in sent:
            truth, at_send = self.frame_at(req.deadline), self.frame_at(wall)
            if truth is None or at_send is None:
                continue
            if abs(truth - at_send - (req.deadline - wall) * RATE) <= 2 * self.period:
                out.append((wall, at_send, truth, req))
        return out

    def close(self):
        self._stop.set()


def run_bridge(bridge, stop: threading.Event, states: list[str] | None = None) -> threading.Thread:
    """Tick ``bridge`` (and measure its clock) every 5 ms from a thread until ``stop`` is set; the
    clock's states, as they change, go into ``states``."""

    def loop():
        while not stop.is_set():
            bridge.tick()
            if bridge.sync is not None:
                bridge.sync.measure()
                if states is not None and (not states or states[-1] != bridge.sync.state):
                    states.append(bridge.sync.state)
            time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


class Master:
    """A JACK client acting as timebase master at a constant tempo in 3/4 (the test may change it, or
    freeze its bar|beat); its transport is sampled into ``transport``."""

    def __init__(self, jack, period: int, bpm: float = 120.0, name: str = "master"):
        self.bpm, self.jack, self.frozen = bpm, jack, False
        self.client = jack.Client(name, no_start_server=True)
        self.client.set_timebase_callback(self._bbt)
        self.client.activate()
        self.transport = TransportLog(jack, self.client, period)

    def _bbt(self, state, nframes, pos, new_pos):
        beats = 0 if self.frozen else pos.frame / RATE * self.bpm / 60  # quarter notes
        pos.valid = pos.valid | 0x10
        pos.bar, pos.beat = int(beats // 3) + 1, int(beats % 3) + 1
        pos.tick = int(beats % 1 * 1920)
        pos.bar_start_tick = (pos.bar - 1) * 3 * 1920.0
        pos.beats_per_bar, pos.beat_type, pos.ticks_per_beat, pos.beats_per_minute = 3.0, 4.0, 1920.0, self.bpm

    def close(self):
        self.transport.close()
        self.client.deactivate()
        self.client.close()
