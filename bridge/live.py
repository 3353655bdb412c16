"""The live bridge: follow the host's transport and send frame requests ahead of the playhead.

Each tick the bridge reads the playhead (OSC transport or MIDI clock), and requests every frame
of the grid whose time lies in [playhead, playhead + lookahead) that it has not requested yet,
with a wall-clock deadline at which the frame is due on screen (the server drops frames it can
no longer deliver in time). A jump of the playhead (seek, loop) restarts the request window.
Parameters come from the mapping (live audio features normalised by fixed or calibrated ranges,
OSC automation lanes, LFOs and phases on the tempo map) and MIDI CC mappings, which override.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from bendbridge.protocol import FrameRequest

from .features import FeatureConfig, Smoothing, extract_features
from .mapping import MusicMapping
from .sync import SyncSource
from .timeline import FramePosition, Timeline

__all__ = ["LiveFeatures", "LiveBridge", "ValueLane"]

READ_SPAN = 0.002  # seconds: a playhead read that took longer was interrupted, and is read again
READ_TRIES = 3


@dataclass
class ValueLane:
    """A lane whose value is whatever arrived last (OSC automation), in [0, 1]; None until the
    first value arrives (the mapped parameter keeps its base until then)."""

    value: float | None = None
    domain: str = "seconds"
    live: bool = True  # a lane that has sent nothing yet is reported as missing

    def normalised_at(self, _t: Any) -> float | None:
        return self.value


class LiveFeatures:
    """Audio features from live blocks: a ring buffer, the newest window, fixed or calibrated ranges.

    ``ranges``: feature → (lo, hi) for normalisation; features without one are calibrated from
    the running min/max of what has been heard.
    """

    def __init__(
        self,
        rate: int = 22_050,
        analysis: FeatureConfig | None = None,
        ranges: dict[str, tuple[float, float]] | None = None,
        smoothing: dict[str, Smoothing] | None = None,
    ):
        self.analysis = analysis or FeatureConfig(rate=rate)
        self.rate = self.analysis.rate
        self.buf: deque[np.ndarray] = deque()
        self.size = 0
        self.keep = int(self.analysis.window * self.rate) * 4
        self.ranges = dict(ranges or {})
        self.seen: dict[str, list[float]] = {}
        self.smoothing = dict(smoothing or {})
        self._smoothers = {k: LiveSmoother(v) for k, v in self.smoothing.items()}
        self.heard = 0  # samples pushed so far

    def push(self, block: np.ndarray) -> None:
        """Append audio ([N] mono or [C, N], already at ``rate``)."""
        mono = np.asarray(block, np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=0)
        self.buf.append(mono)
        self.size += len(mono)
        self.heard += len(mono)
        while self.buf and self.size - len(self.buf[0]) >= self.keep:
            self.size -= len(self.buf.popleft())

    def current_raw(self) -> dict[str, float]:
        """Features of the newest complete window, un-normalised (Hz, amplitude …); empty before
        any audio. The window ends at the newest sample heard (it is centred half a window before)."""
        if not self.buf:
            return {}
        audio = np.concatenate(list(self.buf))
        half = Fraction(int(self.analysis.window * self.rate) // 2 + 1, self.rate)
        t = max(Fraction(len(audio), self.rate) - half, Fraction(0))
        return {k: float(v[0]) for k, v in extract_features(audio, [t], self.analysis).items()}

    def current(self) -> dict[str, float]:
        """Normalised features of the newest complete window; empty before any audio arrives (the
        features are then missing, and neutral in the mapping)."""
        out = {}
        now = self.heard / self.rate  # audio time, seconds
        for k, v in self.current_raw().items():
            if k in self._smoothers:
                v = self._smoothers[k].step(v, now)
            lo, hi = self.ranges.get(k) or self._calibrate(k, v)
            out[k] = 0.0 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
        return out

    def _calibrate(self, k: str, v: float) -> tuple[float, float]:
        s = self.seen.setdefault(k, [v, v])
        s[0], s[1] = min(s[0], v), max(s[1], v)
        return s[0], s[1]


class LiveSmoother:
    """The offline smoothing (:func:`~bridge.features.smooth`), causal and in time: a median over the
    values of the last ``median`` seconds, the attack/release follower with time constants in
    seconds of audio, and the gate against the range seen so far."""

    def __init__(self, s: Smoothing):
        self.s = s
        self.recent: deque[tuple[float, float]] = deque()  # (audio seconds, raw value)
        self.prev: float | None = None
        self.last_t: float | None = None
        self.lo, self.hi = math.inf, -math.inf

    def step(self, value: float, t: float) -> float:
        y = value
        if self.s.median > 0:
            self.recent.append((t, value))
            while self.recent and t - self.recent[0][0] > self.s.median:
                self.recent.popleft()
            y = float(np.median([v for _, v in self.recent]))
        if (self.s.attack > 0 or self.s.release > 0) and self.prev is not None and self.last_t is not None:
            dt = max(t - self.last_t, 0.0)
            tau = self.s.attack if y > self.prev else self.s.release
            a = math.exp(-dt / tau) if tau > 0 else 0.0
            y = a * self.prev + (1 - a) * y
        self.prev, self.last_t = y, t
        self.lo, self.hi = min(self.lo, y), max(self.hi, y)
        if self.s.gate > 0 and self.hi > self.lo and y < self.lo + self.s.gate * (self.hi - self.lo):
            return 0.0
        return y


@dataclass
class LiveBridge:
    """Ties a transport, a mapping and a render client together."""

    client: Any  # bridge.client.RenderClient with a live session set up
    timeline: Timeline
    mapping: MusicMapping
    playhead: Callable[[], Fraction | None]  # seconds, or None when stopped
    lookahead: float = 0.5
    features: LiveFeatures | None = None
    lanes: dict[str, Any] = field(default_factory=dict)
    cc_values: Callable[[], dict[str, dict[str, float]]] | None = None
    sent: set[int] = field(default_factory=set)
    on_sent: Callable[[FramePosition, dict, float], None] | None = None  # (position, params, due wall time)
    sync: SyncSource | None = None  # a live clock with its own beats and meter (JACK master, Link)
    _last: Fraction | None = None
    requests: int = 0

    @property
    def position(self) -> Fraction | None:
        """The playhead at the last tick (seconds), None before the transport said where it is."""
        return self._last

    def _read_playhead(self) -> tuple[Fraction | None, float]:
        """The playhead and the wall time it was read at, bracketed by two wall-clock reads: a read
        interrupted between the two clocks (a collector pause, the scheduler) is read again, as a
        frame's deadline is the wall time plus its distance from this playhead."""
        for _ in range(READ_TRIES):
            before = time.time()
            pos = self.playhead()
            after = time.time()
            if after - before <= READ_SPAN:
                break
        return pos, (before + after) / 2

    def tick(self) -> list[int]:
        """Request the frames now due within the lookahead; returns their indices."""
        pos, now_wall = self._read_playhead()
        if pos is None:
            return []
        g = self.timeline.grid
        ahead = Fraction(self.lookahead).limit_denominator(1000)
        if self._last is not None and (pos < self._last - 2 / g.fps or pos - self._last > 2 * ahead):
            self.sent.clear()  # seek or loop (a clock's jitter of under two frames is not one)
        self._last = pos
        first = max(0, math.ceil((pos - g.start) * g.fps))  # frames at or after the playhead…
        end = math.ceil((pos + ahead - g.start) * g.fps)  # …and before playhead + lookahead
        if self.sync is not None and self.sync.state != "rolling":
            end = first + 1  # a stopped (or held) clock shows the frame at the playhead, nothing ahead
        self.sent.difference_update([i for i in self.sent if i < first - 2 * g.fps])  # long past
        todo = [i for i in range(first, end) if i not in self.sent]
        if not todo:
            return []
        timeline = self._timeline()
        positions: list[FramePosition] = [self._position(timeline, i) for i in todo]
        feats = self.features.current() if self.features else {}
        feats_arr = {k: np.full(len(todo), v) for k, v in feats.items()}
        params = self.mapping.resolve(positions, timeline, feats_arr, self.lanes)
        cc = self.cc_values() if self.cc_values else {}
        for p, pp in zip(positions, params):
            for bend, vals in cc.items():
                pp.setdefault(bend, {}).update(vals)
            deadline = now_wall + float(p.seconds - pos)
            self.client.send(FrameRequest(**p.wire(), params=pp, deadline=deadline), pos=p.sample)
            self.sent.add(p.frame)
            self.requests += 1
            if self.sync is not None:
                self.sync.watch(p.seconds, p.beats, deadline)
            if self.on_sent is not None:
                self.on_sent(p, pp, deadline)
        return todo

    def _timeline(self) -> Timeline:
        """The timeline of this tick: the session's, with the clock's meter where it carries one."""
        meter = self.sync.meter() if self.sync is not None else None
        return self.timeline if meter is None else Timeline(self.timeline.grid, self.timeline.tempo, meter)

    def _position(self, timeline: Timeline, i: int) -> FramePosition:
        """Frame ``i`` with the clock's beats where it carries them, else the tempo map's."""
        t = timeline.grid.time(i)
        beats = self.sync.beats_at(t) if self.sync is not None else None
        if beats is None:
            return timeline.position(i)
        return FramePosition(i, t, timeline.grid.sample(i), beats, timeline.meter.bar_beat(beats))

    def run(self, stop: Any, period: float = 0.01) -> None:
        while not stop.is_set():
            self.tick()
            time.sleep(period)
