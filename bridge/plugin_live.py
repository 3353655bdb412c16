"""The live bridge following the plugin in the DAW (``bendbridge bridge --link``).

A :class:`PluginFollower` turns what the plugin streams into what :class:`~.live.LiveBridge`
asks for: the playhead (the host's last reported sample, moved on by the wall clock while the
host rolls), the macros as lanes (each control's latest value), audio features of the audio the
plugin hears, and a timeline whose tempo map is the host's own, rebuilt from its recent bar and
beat positions (:mod:`.host_tempo`) about once a second.

A plugin that goes quiet while rolling (the DAW froze, the plugin was bypassed, the link broke)
is held: the playhead stops where the last record left it, the macros keep their last values,
and :attr:`PluginFollower.reports` says so once — the live bridge never crashes on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction

from bendbridge.protocol import AudioBlock

from .features import FeatureConfig
from .host_tempo import anchors_of, meter_from_bars, tempo_through
from .live import LiveFeatures, ValueLane
from .plugin_link import PluginReceiver
from .timeline import FrameGrid, Timeline

__all__ = ["PluginFollower"]

QUIET_SECONDS = 0.25  # no record for this long while rolling: the plugin has gone quiet
RECENT_ANCHORS = 2000  # the tempo map near the playhead is fitted to the last this many positions
REFRESH_SECONDS = 1.0
JITTER_SECONDS = Fraction(1, 10)  # a playhead this little behind the last one is delivery jitter, not a seek


@dataclass
class PluginFollower:
    """Playhead, lanes, features (``current()``, for :class:`LiveBridge`) and timeline from a plugin."""

    receiver: PluginReceiver
    timeline: Timeline  # the config's; its tempo map is replaced by the host's as positions arrive
    lanes: dict[str, ValueLane] = field(default_factory=dict)
    analysis: FeatureConfig | None = None  # features of the plugin's audio, analysed at the host's rate
    report: Callable[[str], None] = print
    reports: list[str] = field(default_factory=list)
    features: LiveFeatures | None = None
    smoothing: dict = field(default_factory=dict)  # feature → Smoothing, as offline
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _heard: int = 0  # records seen at the last playhead
    _heard_at: float = 0.0  # monotonic time they were seen
    _quiet: bool = False
    _refreshed_at: float = 0.0
    _last: Fraction | None = None  # the playhead last returned
    _jumps: int = 0  # jumps seen by then

    def __post_init__(self) -> None:
        self.receiver.on_audio = self._push_audio

    def _push_audio(self, block: AudioBlock) -> None:
        with self._lock:
            if self.features is None or self.features.rate != block.rate:
                base = self.analysis or FeatureConfig()
                self.features = LiveFeatures(analysis=replace(base, rate=block.rate), smoothing=self.smoothing)
            self.features.push(block.data)

    def current(self) -> dict[str, float]:
        """Normalised features of the newest audio the plugin sent (none before any: neutral)."""
        with self._lock:
            return self.features.current() if self.features is not None else {}

    def _say(self, text: str) -> None:
        self.reports.append(text)
        self.report(text)

    def playhead(self) -> Fraction | None:
        """Seconds at the playhead now, or None before the host has said where it is."""
        stream, now = self.receiver.stream, time.monotonic()
        rate = stream.rate
        last = stream.transports[-1] if stream.transports else None
        if last is None or not rate:
            return None
        if stream.records != self._heard:
            if self._quiet:
                self._say(f"the plugin is streaming again (sample {stream.position})")
            self._heard, self._heard_at, self._quiet = stream.records, now, False
        ahead = 0.0
        if last.playing:
            ahead = now - self._heard_at
            if ahead > QUIET_SECONDS:
                if not self._quiet:
                    self._quiet = True
                    self._say(f"the plugin went quiet while rolling at sample {stream.position}; holding there")
                ahead = QUIET_SECONDS  # hold where the playhead had got to
        self._update_lanes()
        self._refresh_tempo(now)
        pos = Fraction(stream.position, rate) + Fraction(ahead).limit_denominator(rate)
        jumped, self._jumps = len(stream.jumps) != self._jumps, len(stream.jumps)
        if self._last is not None and not jumped and self._last - JITTER_SECONDS <= pos < self._last:
            pos = self._last  # records arrive in bursts: the wall clock ran a little ahead; never step back
        self._last = pos
        return pos

    def _update_lanes(self) -> None:
        for name, heard in list(self.receiver.stream.controls.items()):
            if name in self.lanes and heard:
                self.lanes[name].value = min(1.0, max(0.0, heard[-1][1]))

    def _refresh_tempo(self, now: float) -> None:
        if now - self._refreshed_at < REFRESH_SECONDS:
            return
        stream = self.receiver.stream
        barred = stream._barred()
        if not barred or not stream.rate:
            return
        self._refreshed_at = now
        meter = meter_from_bars(barred)
        recent = barred[-RECENT_ANCHORS:]
        grid = self.timeline.grid
        self.timeline.tempo = tempo_through(anchors_of(recent, meter), stream.rate, meter)
        self.timeline.meter = meter
        if grid.rate != stream.rate:
            self.timeline.grid = FrameGrid(grid.fps, stream.rate, grid.start)
