"""Ableton Link between two real peers on loopback: a driven peer (a DAW's part) and the bridge's.

Link finds peers by UDP multicast on every interface. To keep the test on loopback only, both
peers run in a private network namespace (``unshare -n``, or ``unshare -rn`` without root) whose
only interface is the loopback, given multicast and a route for 224.0.0.0/4 — nothing reaches
another machine and no other Link session on the network is joined or disturbed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
LOOPBACK_MULTICAST = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


pytestmark = pytest.mark.usefixtures("frozen_heap")  # as the live bridge runs (see run_live)


def run_in_private_network(command: str) -> str:
    """Run ``command`` in a new network namespace with multicast on its loopback; its stdout."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail("unshare and ip are required (util-linux, iproute2)")
        pytest.skip("unshare or ip missing (util-linux, iproute2)")
    flags = ["-n"] if os.geteuid() == 0 else ["-r", "-n"]
    done = subprocess.run(
        ["unshare", *flags, "sh", "-c", f"{LOOPBACK_MULTICAST} && {command}"],
        capture_output=True, text=True, timeout=90, cwd=HERE,
    )  # fmt: skip
    if done.returncode != 0 and "unshare failed" in done.stderr:
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail(f"no network namespace here: {done.stderr.strip()}")
        pytest.skip(f"no network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_bridge_follows_a_link_peers_tempo_start_stop_and_beat_within_a_millisecond():
    pytest.importorskip("link")
    result = json.loads(run_in_private_network(f"{sys.executable} link_peers.py bridge").splitlines()[-1])
    errors = [abs(e["ms"]) for e in result["errors_ms"]]
    print(f"Link beat offset: p50 {sorted(errors)[len(errors) // 2]:.4f} ms, max {max(errors):.4f} ms over "
          f"{len(errors)} frames")  # fmt: skip
    assert len(errors) > 100
    assert max(errors) < 1.0  # the beat at each frame's due time is the driving peer's, within 1 ms
    timeline = result["timeline"]
    assert timeline[0]["tempo"] == 120.0  # joining never changed the session's tempo (the bridge asked 100)
    assert [c["what"] for c in timeline] == ["start", "tempo", "stop", "start", "leave"]
    assert any("90.00 BPM" in s for s in result["statuses"])  # the tempo change reached the bridge
    states = result["states"]
    assert states[states.index("rolling") :] == ["rolling", "stopped", "rolling", "lost"]  # start/stop followed
    assert [n for n in result["news"] if "every peer left" in n] == [result["news"][-1]]  # said once
    assert result["held"] != "None"
