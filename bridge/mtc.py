"""MIDI Time Code (``bendbridge bridge --sync mtc --midi-in PORT``): quarter frames and full frames.

Quarter frame ``F1 0nnn dddd``: pieces 0–7 carry frame LS/MS, seconds LS/MS, minutes LS/MS,
hours LS, hours MS + rate (0 = 24, 1 = 25, 2 = 29.97 drop-frame, 3 = 30 fps). Eight pieces — two
frames — give one time: the time at which piece 0 was sent. The follower *locks* on the first
complete, in-order group; from then on piece *k* after that piece 0 is at ``time + k/4`` frames,
so every quarter frame moves the position, and each newly completed group is checked against it:
a group that disagrees by more than two frames is a jump (a relocation), followed at once.

Full frame (SysEx ``F0 7F <dev> 01 01 hr mn sc fr F7``, ``hr = 0rrhhhhh``) is a locate: the
position is set and held (state ``stopped``) until quarter frames run again.

Between quarter frames the position advances with wall time from the last one; arrival jitter (a
MIDI port delivers per audio period) is smoothed by moving a fifth of the way to each quarter
frame's time. With no quarter frame for :data:`TIMEOUT` seconds the code is *lost*: the last
position is held, said once, and re-locks when code returns. Code that runs backwards (pieces
7→0) is not followed: the position holds until it runs forwards again.

Drop-frame (29.97 DF) timecode skips frame numbers 0 and 1 at the start of every minute except
minutes divisible by 10, so 29.97 DF timecode stays within 2 ms per 10 minutes of clock time.
"""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from typing import Any

from .sync import SyncSource

__all__ = ["MTC_RATES", "MtcFollower", "timecode_frames", "frames_timecode", "TIMEOUT"]

MTC_RATES = {0: Fraction(24), 1: Fraction(25), 2: Fraction(30000, 1001), 3: Fraction(30)}  # rate code → fps
RATE_NAMES = {0: "24", 1: "25", 2: "29.97 drop-frame", 3: "30"}
TIMEOUT = 0.25  # seconds without a quarter frame before the code counts as lost
JUMP = 2  # frames: a decoded time further than this from the running position is a relocation
GAIN = Fraction(1, 5)  # how far each quarter frame pulls the position (arrival jitter smoothing)


def timecode_frames(h: int, m: int, s: int, f: int, rate: int) -> int:
    """Frame count since 00:00:00:00 of a timecode at MTC rate code ``rate`` (drop-frame for 2)."""
    nominal = (24, 25, 30, 30)[rate]
    frames = ((h * 60 + m) * 60 + s) * nominal + f
    if rate == 2:
        minutes = h * 60 + m
        frames -= 2 * (minutes - minutes // 10)
    return frames


def frames_timecode(frames: int, rate: int) -> tuple[int, int, int, int]:
    """The inverse of :func:`timecode_frames`: (h, m, s, f) of a frame count."""
    if rate == 2:
        per10, per_min = 17982, 1798  # frames in ten minutes and in a dropped minute
        tens, rest = divmod(frames, per10)
        frames += 18 * tens + (2 * ((rest - 2) // per_min) if rest > 1 else 0)
    nominal = (24, 25, 30, 30)[rate]
    s_total, f = divmod(frames, nominal)
    m_total, s = divmod(s_total, 60)
    h, m = divmod(m_total, 60)
    return h % 24, m, s, f


class MtcFollower(SyncSource):
    """Follows MTC fed as mido messages with their arrival times (:meth:`feed`, any thread)."""

    name = "mtc"

    def __init__(self, clock: Any = time.monotonic, timeout: float = TIMEOUT):
        super().__init__()
        self.clock, self.timeout = clock, timeout
        self.rate: int | None = None
        self.pieces: list[int | None] = [None] * 8
        self.last_piece: int | None = None
        self.run = 0  # consecutive in-order quarter frames
        self.anchor: tuple[Fraction, float] | None = None  # (position s, arrival time) of the newest quarter frame
        self.locked_at: tuple[Fraction, int] | None = None  # (time of the group's piece 0 s, quarter frames since)
        self.last_arrival: float | None = None
        self.lock_events = 0
        self._mutex = threading.Lock()

    # -- input ------------------------------------------------------------------------------
    def feed(self, msg: Any, t: float | None = None) -> None:
        """One mido message (``quarter_frame`` or a full-frame ``sysex``) that arrived at ``t``."""
        t = self.clock() if t is None else t
        with self._mutex:
            if msg.type == "quarter_frame":
                self._quarter(int(msg.frame_type), int(msg.frame_value), t)
            elif msg.type == "sysex" and len(msg.data) == 8 and msg.data[0] == 0x7F and msg.data[2:4] == (1, 1):
                self._full(*msg.data[4:8])

    def _full(self, hr: int, mn: int, sc: int, fr: int) -> None:
        rate = (hr >> 5) & 3
        self.rate = rate
        pos = Fraction(timecode_frames(hr & 0x1F, mn, sc, fr, rate)) / MTC_RATES[rate]
        self.anchor, self.locked_at, self.run, self.last_piece = (pos, self.clock()), None, 0, None
        self.set_state("stopped", f"MTC full frame: located at {_tc(hr & 0x1F, mn, sc, fr, rate)}")

    def _quarter(self, piece: int, value: int, t: float) -> None:
        forward = self.last_piece is not None and piece == (self.last_piece + 1) % 8
        self.run = self.run + 1 if forward else (1 if piece == 0 else 0)
        self.last_piece, self.last_arrival = piece, t
        self.pieces[piece] = value
        if self.locked_at is not None and forward:
            start, count = self.locked_at
            self.locked_at = (start, count + 1)
            self._pull(start + Fraction(count + 1, 4) / MTC_RATES[self.rate or 0], t)
        elif self.locked_at is not None:
            self.locked_at = None  # out of order (reversed, lost pieces): hold until a new group
        if piece == 7 and self.run >= 8:
            self._group(t)

    def _group(self, t: float) -> None:
        p = self.pieces
        frame, sec, minute = p[0] | p[1] << 4, p[2] | p[3] << 4, p[4] | p[5] << 4  # type: ignore[operator]
        hour, rate = p[6] | (p[7] & 1) << 4, (p[7] >> 1) & 3  # type: ignore[operator]
        start = Fraction(timecode_frames(hour, minute, sec, frame, rate)) / MTC_RATES[rate]
        now = start + Fraction(7, 4) / MTC_RATES[rate]
        if self.locked_at is not None and self.rate == rate:
            expected = self.locked_at[0] + Fraction(self.locked_at[1], 4) / MTC_RATES[rate]
            if abs(now - expected) <= JUMP / MTC_RATES[rate]:
                return  # the running count agrees with the code
        self.rate, self.locked_at, self.anchor = rate, (start, 7), (now, t)
        self.lock_events += 1
        where = f"{_tc(hour, minute, sec, frame, rate)} ({RATE_NAMES[rate]} fps)"
        if self.state == "rolling":
            self.say(f"MTC jumped to {where}")
        self.set_state("rolling", f"MTC locked at {where}")

    def _pull(self, code: Fraction, t: float) -> None:
        """Move the running position a fifth of the way to a quarter frame's time ``code``."""
        if self.anchor is None:
            self.anchor = (code, t)
            return
        predicted = self.anchor[0] + Fraction(t - self.anchor[1])
        self.anchor = (predicted + GAIN * (code - predicted), t)

    # -- position ----------------------------------------------------------------------------
    def playhead(self) -> Fraction | None:
        with self._mutex:
            if self.anchor is None:
                return None
            pos, at = self.anchor
            now = self.clock()
            if self.state == "rolling" and self.last_arrival is not None and now - self.last_arrival > self.timeout:
                held = pos + Fraction(self.last_arrival - at)
                self.anchor, self.locked_at, self.run = (held, self.last_arrival), None, 0
                self.set_state(
                    "lost", f"MTC stopped for over {self.timeout * 1000:.0f} ms: holding {float(held):.3f} s"
                )
                return held
            if self.state != "rolling" or self.locked_at is None:
                return pos
            return pos + Fraction(now - at)

    def detail(self) -> str:
        return f"{RATE_NAMES[self.rate]} fps" if self.rate is not None else "no code yet"


def _tc(h: int, m: int, s: int, f: int, rate: int) -> str:
    return f"{h:02d}:{m:02d}:{s:02d}{';' if rate == 2 else ':'}{f:02d}"
