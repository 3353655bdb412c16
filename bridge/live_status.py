"""What a live session is doing, for the performer: requested, shown, dropped and late frames,
render latency, and the inputs that have gone missing.

:class:`LiveStats` is fed by the live loop (each request sent, each ``frame_ready`` back) and gives
the one-line status the console keeps updating and the summary printed at exit. A frame is *late*
when it comes back after its due time (the server renders it but the screen has moved on) and
*dropped* when the server gave up on it (``status == "dropped"``). Latency is from the request
leaving the bridge to its frame coming back, in seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from bendbridge.protocol import FrameReady
from bendbridge.protocol.stats import percentile

__all__ = ["LiveStats", "percentile"]


@dataclass
class LiveStats:
    requested: int = 0
    delivered: int = 0
    dropped: int = 0
    late: int = 0
    failed: int = 0  # frames the server rendered as NaN or black
    missing: dict[str, float] = field(default_factory=dict)  # input name → wall time first missed
    latencies: deque = field(default_factory=lambda: deque(maxlen=4096))  # seconds, the newest frames
    _pending: dict[int, tuple[float, float]] = field(default_factory=dict)  # frame → (sent, due), wall s
    _shown_times: deque = field(default_factory=lambda: deque(maxlen=256))  # wall times frames came back
    started: float = field(default_factory=time.time)

    def sent(self, frame: int, due: float, now: float | None = None) -> None:
        self._pending[frame] = (time.time() if now is None else now, due)
        self.requested += 1

    def received(self, ready: FrameReady, now: float | None = None) -> bool:
        """Count one frame_ready; True when the frame is worth showing (rendered, not dropped)."""
        now = time.time() if now is None else now
        sent, due = self._pending.pop(ready.frame, (None, None))
        if ready.status == "dropped":
            self.dropped += 1
            return False
        if ready.status in ("nan", "black"):
            self.failed += 1
        self.delivered += 1
        self._shown_times.append(now)
        if sent is not None:
            self.latencies.append(now - sent)
        if due is not None and now > due:
            self.late += 1
        return True

    def missed(self, names: set[str] | list[str], now: float | None = None) -> list[str]:
        """Record inputs with no data; returns those not reported before (each is named once)."""
        new = [n for n in sorted(names) if n not in self.missing]
        for n in new:
            self.missing[n] = time.time() if now is None else now
        return new

    def fps(self, now: float | None = None, window: float = 2.0) -> float:
        """Frames delivered per second over the last ``window`` seconds."""
        now = time.time() if now is None else now
        recent = [t for t in self._shown_times if now - t <= window]
        return len(recent) / window

    def line(self, playhead: str, sync: str | None = None) -> str:
        """The status line; ``sync`` is the clock's part (source, state, offset) when one is followed."""
        lat = list(self.latencies)
        parts = [
            f"▶ {playhead}",
            *([f"sync {sync}"] if sync else []),
            f"requested {self.requested}",
            f"delivered {self.delivered} ({self.fps():.1f} fps)",
            f"dropped {self.dropped}",
            f"late {self.late}",
            f"latency p50 {_ms(percentile(lat, 0.5))} p99 {_ms(percentile(lat, 0.99))}",
        ]
        if self.missing:
            parts.append("missing: " + ", ".join(self.missing))
        return " | ".join(parts)

    def summary(self, sync: str | None = None) -> str:
        lat = list(self.latencies)
        took = time.time() - self.started
        text = (
            f"live session: {took:.1f} s, {self.requested} frames requested, {self.delivered} delivered, "
            f"{self.dropped} dropped by the server, {self.late} late, {self.failed} NaN/black; "
            f"latency p50 {_ms(percentile(lat, 0.5))}, p99 {_ms(percentile(lat, 0.99))}"
        )
        if self.missing:
            text += "; inputs with no data: " + ", ".join(self.missing)
        if sync:
            text += f"; sync {sync}"
        return text


def _ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"
