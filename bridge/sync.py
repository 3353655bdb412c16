"""What every live clock shares: its state, the position it holds when it goes quiet, and the offset
between where it said a frame would be and where the music really was when the frame came due.

A clock (JACK transport, Ableton Link, MIDI Time Code — see ``sync_jack``, ``sync_link``, ``mtc``)
is a :class:`SyncSource`. The live bridge asks it for the playhead (song seconds, or None while it
knows no position) and, where the clock carries its own beats (a JACK timebase master, Link), for
the beats of a frame; otherwise the session's tempo map gives them.

States: ``waiting`` (no position yet), ``rolling``, ``stopped``, ``lost`` (the clock went away: the
last position is held and said once; following resumes when the clock returns).

*Offset*: for each frame requested the source remembers (due wall time, song seconds, beats); once
the frame is due it compares them with where the clock says the music is at that instant.
A difference over :data:`RELOCATION` seconds is a relocation (counted, not an offset).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from fractions import Fraction

from bendbridge.protocol.errors import BendbridgeError

from .live_status import percentile
from .tempo import TimeSignatureMap

__all__ = ["SyncSource", "SyncError", "SOURCES", "RELOCATION"]

SOURCES = ("osc", "clock", "jack", "link", "mtc")  # --sync choices (clock: MIDI clock + song position)
RELOCATION = 0.25  # seconds: a larger offset at a due time is a jump of the music, not an error


class SyncError(BendbridgeError):
    """A clock option that cannot work (wrong rate, missing port, bad quantum)."""


class SyncSource:
    """Base of the live clocks: state changes said once, offsets measured at each frame's due time."""

    name = "clock"

    def __init__(self) -> None:
        self.state = "waiting"
        self.offsets: deque[float] = deque(maxlen=4096)  # seconds: clock's position − frame's, at due time
        self.relocations = 0
        self._pending: deque[tuple[float, Fraction, Fraction | None]] = deque()  # (due wall s, seconds, beats)
        self._news: deque[str] = deque()
        self._lock = threading.Lock()

    # -- what the live bridge asks ------------------------------------------------------------
    def playhead(self) -> Fraction | None:
        """The song position now (seconds), or None while the clock has not said where it is."""
        raise NotImplementedError

    def beats_at(self, seconds: Fraction) -> Fraction | None:
        """Quarter-note beats at song time ``seconds`` when the clock carries beats; else None."""
        return None

    def meter(self) -> TimeSignatureMap | None:
        """The clock's time signature when it carries one (a JACK timebase master); else None."""
        return None

    def close(self) -> None:
        """Leave the clock (threads, ports, sessions)."""

    # -- state and news ---------------------------------------------------------------------
    def set_state(self, state: str, news: str | None = None) -> None:
        """Move to ``state``; ``news`` is said once on the console when the state changes."""
        with self._lock:
            if state == self.state:
                return
            self.state = state
            if news:
                self._news.append(news)

    def say(self, news: str) -> None:
        """Say ``news`` once on the console without a change of state (a jump, a master not trusted)."""
        with self._lock:
            self._news.append(news)

    def news(self) -> list[str]:
        """State changes not yet said (each is returned once)."""
        with self._lock:
            out = list(self._news)
            self._news.clear()
            return out

    # -- offsets ----------------------------------------------------------------------------
    def watch(self, seconds: Fraction, beats: Fraction, due: float) -> None:
        """Remember a frame requested for song time ``seconds`` (``beats``) due at wall time ``due``."""
        self._pending.append((due, seconds, beats))

    def measure(self, now: float | None = None) -> None:
        """Compare each frame now due with where the clock says the music is (see :meth:`error_at`)."""
        now = time.time() if now is None else now
        while self._pending and self._pending[0][0] <= now:
            due, seconds, beats = self._pending.popleft()
            if self.state != "rolling":
                continue
            err = self.error_at(seconds, beats, now - due)
            if err is None:
                continue
            if abs(err) > RELOCATION:
                self.relocations += 1
            else:
                self.offsets.append(err)

    def error_at(self, seconds: Fraction, beats: Fraction, late: float) -> float | None:
        """Seconds by which the clock was past ``seconds`` when the frame came due (``late`` seconds ago)."""
        pos = self.playhead()
        return None if pos is None else float(pos) - late - float(seconds)

    def status(self) -> str:
        """``jack rolling, offset p50 0.1 ms p99 0.9 ms`` — the sync part of the status line."""
        text = f"{self.name} {self.state}"
        detail = self.detail()
        if detail:
            text += f" ({detail})"
        if self.offsets:
            o = [abs(x) * 1000 for x in self.offsets]
            text += f", offset p50 {percentile(o, 0.5):.1f} ms p99 {percentile(o, 0.99):.1f} ms"
        return text

    def detail(self) -> str:
        """Source-specific words for the status line (tempo, peers, frame rate)."""
        return ""
