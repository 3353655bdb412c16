"""The live session's numbers: what was requested, shown, dropped and late, latency, missing inputs."""

from __future__ import annotations

import pytest

from bendbridge.bridge.live_status import LiveStats
from bendbridge.protocol import FrameReady


def _ready(frame: int, status: str = "ok") -> FrameReady:
    return FrameReady(frame=frame, sample=0, hash="", timings={}, status=status)


def test_frames_back_in_time_late_and_dropped_are_counted_with_their_latency():
    s = LiveStats()
    for f in range(4):
        s.sent(f, due=100.0 + f, now=99.0)
    assert s.received(_ready(0), now=99.5) and s.received(_ready(1), now=101.5)  # 1 is late (due 101)
    assert not s.received(_ready(2, "dropped"), now=100.0)
    assert (s.requested, s.delivered, s.dropped, s.late) == (4, 2, 1, 1)
    assert sorted(s.latencies) == pytest.approx([0.5, 2.5])
    assert "requested 4 | delivered 2" in s.line("3:1:000") and "dropped 1 | late 1" in s.line("3:1:000")


def test_a_missing_input_is_named_once():
    s = LiveStats()
    assert s.missed({"feature centroid", "lane x"}) == ["feature centroid", "lane x"]
    assert s.missed({"feature centroid"}) == []
    assert "missing: feature centroid, lane x" in s.line("1:1:000")
    assert s.summary().endswith("inputs with no data: feature centroid, lane x")
