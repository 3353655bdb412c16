"""Follow an Ableton Link session (``bendbridge bridge --sync link``).

Link shares tempo, beat phase within a *quantum* (beats, default 4: one bar of 4/4) and, with
start/stop sync, whether the session plays — not a song position. The bridge joins with the
``LinkPython-extern`` binding (wheels for Linux, macOS and Windows; synchronous calls, so it fits
the bridge's tick loop) and only reads: it never commits a session state, so it never changes the
session's tempo or phase.

Song time under Link is wall time since the session started playing (``timeForIsPlaying``): frames
are due every 1/fps seconds on the Link clock. Each frame's beats are the Link timeline's beat at
its due time, counted from the first quantum boundary at or after the start — what a peer that
requests beat 0 at its start (``requestBeatAtStartPlayingTime(0, quantum)``, as Live does) calls
beat 0; frames before it (a count-in) have negative beats. With ``free`` the bridge ignores
start/stop and runs from the quantum boundary before it joined.

When every peer leaves, the last position is held and said once; when one returns, following
resumes.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from bendbridge.protocol.values import finite_number

from .sync import SyncError, SyncSource

__all__ = ["LinkSession"]


class LinkSession(SyncSource):
    """A Link peer that follows the session; ``quantum`` in beats, ``tempo`` only used alone."""

    name = "link"

    def __init__(self, quantum: float = 4, tempo: float = 120.0, free: bool = False):
        super().__init__()
        self.quantum = finite_number(quantum, "--quantum", 1, 64)
        try:
            import link
        except ImportError:
            raise SyncError(
                "--sync", "link needs the LinkPython-extern package: pip install LinkPython-extern"
            ) from None
        self.link = link.Link(float(tempo))
        self.link.enabled = True
        self.link.startStopSyncEnabled = True
        self.free = free
        self.start: int | None = None  # Link clock µs at which song time 0 is
        self.origin = 0.0  # Link beat that is song beat 0
        self.state_now: Any = None  # the session state captured at the last playhead()
        self.had_peers = False
        self._held: Fraction | None = None

    def _micros(self) -> int:
        return int(self.link.clock().micros())

    def _begin(self, state: Any, start: int) -> None:
        """Song time 0 at Link time ``start``; beat 0 at the first quantum boundary at or after it."""
        q = self.quantum
        self.start = start
        self.origin = q * math.ceil(state.beatAtTime(start, q) / q - 1e-9)

    def playhead(self) -> Fraction | None:
        state, now = self.link.captureAppSessionState(), self._micros()
        self.state_now = state
        peers = self.link.numPeers()
        if peers:
            self.had_peers = True
        elif self.had_peers:
            if self.state != "lost":
                self._held = self._seconds(now) if self.start is not None else None
                held = f"{float(self._held):.2f} s" if self._held is not None else "no position"
                self.set_state("lost", f"Link: every peer left: holding {held}")
            return self._held
        if self.free:
            if self.start is None:
                q = self.quantum
                self._begin(state, int(state.timeAtBeat(q * math.floor(state.beatAtTime(now, q) / q), q)))
            self.set_state("rolling", "Link session back: following it again" if self.state == "lost" else None)
            return self._seconds(now)
        if not state.isPlaying():
            self.set_state("stopped", "Link session back (stopped)" if self.state == "lost" else None)
            return None
        start = int(state.timeForIsPlaying())
        if start != self.start:
            self._begin(state, start)
        self.set_state("rolling", "Link session back: following it again" if self.state == "lost" else None)
        return self._seconds(now)

    def _seconds(self, micros: int) -> Fraction:
        return Fraction(micros - (self.start or 0), 1_000_000)

    def beats_at(self, seconds: Fraction) -> Fraction | None:
        if self.state_now is None or self.start is None:
            return None
        t = self.start + round(seconds * 1_000_000)
        return Fraction(self.state_now.beatAtTime(t, self.quantum) - self.origin)

    def error_at(self, seconds: Fraction, beats: Fraction, late: float) -> float | None:
        """Seconds of Link time between the frame's beat and the session's beat at its due time."""
        if self.start is None:
            return None
        state = self.link.captureAppSessionState()
        due = self._micros() - round(late * 1_000_000)
        beat_then = state.beatAtTime(due, self.quantum) - self.origin
        return (beat_then - float(beats)) * 60.0 / state.tempo()

    def detail(self) -> str:
        state = self.state_now
        if state is None:
            return f"quantum {self.quantum:g}"
        peers = self.link.numPeers()
        phase = state.phaseAtTime(self._micros(), self.quantum)
        return f"{state.tempo():.2f} BPM, phase {phase:.2f}/{self.quantum:g}, {peers} peer{'s' * (peers != 1)}"

    def close(self) -> None:
        self.link.enabled = False

    def __enter__(self) -> LinkSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
