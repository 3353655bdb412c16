"""MIDI Time Code decoding: drop-frame arithmetic, locking on quarter frames, jumps, full frames and
dropouts, fed with mido messages at chosen arrival times (the JACK end-to-end run is in test_sync)."""

from __future__ import annotations

from fractions import Fraction as F

import mido
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bendbridge.bridge.mtc import MTC_RATES, TIMEOUT, MtcFollower, frames_timecode, timecode_frames


@given(st.integers(0, 24 * 3600 * 30 - 1), st.sampled_from([0, 1, 2, 3]))
def test_a_frame_count_survives_timecode_and_back_at_every_rate(frames, rate):
    frames %= {0: 24 * 86400, 1: 25 * 86400, 2: 2_589_408, 3: 30 * 86400}[rate]  # one day of each rate
    h, m, s, f = frames_timecode(frames, rate)
    assert timecode_frames(h, m, s, f, rate) == frames
    if rate == 2 and s == 0 and m % 10:
        assert f >= 2  # frame numbers 0 and 1 are dropped at the start of those minutes


def test_drop_frame_timecode_skips_two_numbers_a_minute_except_every_tenth():
    assert timecode_frames(0, 1, 0, 2, 2) == 1800  # 00:01:00;02 follows 00:00:59;29
    assert timecode_frames(0, 0, 59, 29, 2) == 1799
    assert timecode_frames(0, 10, 0, 0, 2) == 17982  # ten minutes
    assert timecode_frames(1, 0, 0, 0, 2) == 107892  # an hour: 3600 s · 29.97 = 107892 frames
    assert float(F(107892) / MTC_RATES[2]) == pytest.approx(3600, abs=0.004)


def quarter_frames(h, m, s, f, rate, groups):
    """The quarter-frame messages of ``groups`` consecutive two-frame groups from h:m:s:f."""
    start = timecode_frames(h, m, s, f, rate)
    out = []
    for g in range(groups):
        hh, mm, ss, ff = frames_timecode(start + 2 * g, rate)
        values = [ff & 15, ff >> 4, ss & 15, ss >> 4, mm & 15, mm >> 4, hh & 15, (hh >> 4) | rate << 1]
        out += [mido.Message("quarter_frame", frame_type=k, frame_value=v) for k, v in enumerate(values)]
    return out


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def feed(follower, clock, messages, fps):
    """Feed messages a quarter frame apart, the clock moving with them; returns the playheads."""
    seen = []
    for m in messages:
        follower.feed(m, clock.now)
        seen.append(follower.playhead())
        clock.now += float(1 / (4 * fps))
    return seen


@pytest.mark.parametrize("rate", [0, 1, 2, 3])
def test_position_locks_after_two_frames_of_quarter_frames_and_runs_with_them(rate):
    fps, clock = MTC_RATES[rate], FakeClock()
    follower = MtcFollower(clock=clock)
    seen = feed(follower, clock, quarter_frames(0, 0, 10, 4, rate, 6), fps)
    assert all(p is None for p in seen[:7])  # no position before eight quarter frames
    start = F(timecode_frames(0, 0, 10, 4, rate)) / fps
    for k in range(7, len(seen)):
        assert seen[k] == pytest.approx(float(start + F(k, 4) / fps), abs=1e-9)  # piece k: start + k/4 frame
    assert follower.state == "rolling"
    assert any("locked at 00:00:10" in n for n in follower.news())


def test_a_jump_in_the_code_is_followed_within_two_frames():
    clock = FakeClock()
    follower = MtcFollower(clock=clock)
    feed(follower, clock, quarter_frames(0, 1, 0, 0, 1, 5), 25)
    after = feed(follower, clock, quarter_frames(0, 0, 30, 0, 1, 4), 25)  # a locate back to 30 s
    assert after[7] == pytest.approx(30 + 7 / 100, abs=1e-9)
    assert follower.lock_events == 2


def test_lost_code_holds_the_last_position_says_so_once_and_relocks():
    clock = FakeClock()
    follower = MtcFollower(clock=clock)
    seen = feed(follower, clock, quarter_frames(0, 0, 5, 0, 3, 4), 30)
    follower.news()
    last = seen[-1]
    clock.now += TIMEOUT + 0.1
    held = follower.playhead()
    assert follower.state == "lost" and held == pytest.approx(last, abs=1 / 120 + 1e-9)
    clock.now += 1.0
    assert follower.playhead() == held  # held, not running on
    assert len([n for n in follower.news() if "MTC stopped" in n]) == 1
    again = feed(follower, clock, quarter_frames(0, 0, 9, 0, 3, 3), 30)
    assert follower.state == "rolling" and again[-1] == pytest.approx(9 + 23 / 120, abs=1e-9)


def test_a_full_frame_message_locates_and_holds_until_quarter_frames_run():
    clock = FakeClock()
    follower = MtcFollower(clock=clock)
    hr = (2 << 5) | 1  # 29.97 drop-frame, hour 1
    follower.feed(mido.Message("sysex", data=[0x7F, 0x7F, 1, 1, hr, 2, 3, 4]), clock.now)
    expected = F(timecode_frames(1, 2, 3, 4, 2)) / MTC_RATES[2]
    clock.now += 2.0
    assert follower.playhead() == expected and follower.state == "stopped"


def test_code_running_backwards_is_held_not_followed():
    clock = FakeClock()
    follower = MtcFollower(clock=clock)
    seen = feed(follower, clock, quarter_frames(0, 0, 5, 0, 1, 3), 25)
    backwards = list(reversed(quarter_frames(0, 0, 4, 0, 1, 2)))
    after = feed(follower, clock, backwards, 25)
    assert max(after) <= seen[-1] + 1 / 100 + 1e-9  # never runs on while the code is reversed
    assert after[-1] == after[-2]
