"""Two Ableton Link peers on loopback, run by test_sync_link inside a private network namespace
(``unshare -n``) where the loopback is the only interface and carries multicast.

``python link_peers.py driver``: a peer driven by a script, like a DAW: it waits for the bridge,
starts playing with beat 0 at the start (as Live does), changes tempo, stops, starts again and
leaves, printing its timeline after each change as JSON lines on stdout.

``python link_peers.py bridge``: the live bridge's Link follower with a live bridge requesting
frames; it starts the driver, records every request, and prints one JSON object: per request the
beat error in milliseconds against the driver's timeline at the frame's due time, the states and
news the follower went through, and the status lines it showed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

QUANTUM = 4


def driver() -> None:
    import link

    peer = link.Link(120.0)
    peer.enabled, peer.startStopSyncEnabled = True, True
    deadline = time.monotonic() + 10
    while peer.numPeers() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)

    def change(what: str, edit) -> None:
        state = peer.captureAppSessionState()
        now = peer.clock().micros()
        edit(state, now)
        peer.commitAppSessionState(state)
        state = peer.captureAppSessionState()
        t = peer.clock().micros()
        print(json.dumps({"what": what, "t": t, "beat": state.beatAtTime(t, QUANTUM), "tempo": state.tempo(),
                          "playing": state.isPlaying()}), flush=True)  # fmt: skip

    time.sleep(0.5)

    def start(state, now):
        state.setIsPlaying(True, now)
        state.requestBeatAtStartPlayingTime(0, QUANTUM)

    change("start", start)
    time.sleep(2.5)
    change("tempo", lambda state, now: state.setTempo(90.0, now))
    time.sleep(2.5)
    change("stop", lambda state, now: state.setIsPlaying(False, now))
    time.sleep(1.0)
    change("start", start)
    time.sleep(2.0)
    print(json.dumps({"what": "leave", "t": peer.clock().micros()}), flush=True)
    peer.enabled = False


def bridge() -> None:
    from bendbridge.bridge.live import LiveBridge
    from bendbridge.bridge.mapping import MusicMapping
    from bendbridge.bridge.sync_link import LinkSession
    from bendbridge.bridge.timeline import FrameGrid, Timeline

    class Recorder:
        def __init__(self):
            self.sent = []

        def send(self, request, pos=None):
            self.sent.append((follower.start, follower.link.clock().micros(), request))

    drv = subprocess.Popen([sys.executable, __file__, "driver"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)  # the DAW's session is older (Link keeps the older one; within 0.5 s, the lower id)
    follower = LinkSession(QUANTUM, tempo=100.0)
    bridge = LiveBridge(Recorder(), Timeline(FrameGrid(30)), MusicMapping([]), follower.playhead, 0.2)
    bridge.sync = follower
    timeline: list[dict] = []
    threading.Thread(target=lambda: timeline.extend(json.loads(x) for x in drv.stdout), daemon=True).start()
    states, news, statuses = [], [], []
    end = time.monotonic() + 30
    while time.monotonic() < end and not (timeline and timeline[-1]["what"] == "leave"):
        _step(bridge, follower, states, news, statuses)
    leave_until = time.monotonic() + 2.0
    while time.monotonic() < leave_until:  # the session goes away: held, said once
        _step(bridge, follower, states, news, statuses)
    drv.wait(10)
    print(json.dumps({"errors_ms": _errors(bridge.client.sent, timeline), "states": states, "news": news,
                      "statuses": statuses, "timeline": timeline, "held": str(follower.playhead()),
                      "offsets_ms": [o * 1000 for o in follower.offsets]}))  # fmt: skip
    follower.close()


def _step(bridge, follower, states, news, statuses) -> None:
    bridge.tick()
    follower.measure()
    news.extend(follower.news())
    if not states or states[-1] != follower.state:
        states.append(follower.state)
    status = follower.status().split(", phase")[0]  # source, state and tempo
    if not statuses or statuses[-1] != status:
        statuses.append(status)
    time.sleep(0.005)


def _errors(sent, timeline) -> list[dict]:
    """Per request: its beat minus the driver's beat at its due time, in ms at the driver's tempo;
    only frames requested 50 ms or more after the driver's last change and due before its next."""
    out = []
    changes = [c for c in timeline if "beat" in c]
    for start, made, req in sent:
        due = start + round(float(req.seconds) * 1e6)
        before = [c for c in changes if c["t"] <= due]
        if not before or not before[-1]["playing"] or made < before[-1]["t"] + 50_000:
            continue
        seg = before[-1]
        driver_beat = seg["beat"] + (due - seg["t"]) / 1e6 * seg["tempo"] / 60
        out.append({"due": due, "seg": seg["t"], "ms": (float(req.beats) - driver_beat) * 60 / seg["tempo"] * 1000})
    return out


if __name__ == "__main__":
    {"driver": driver, "bridge": bridge}[sys.argv[1]]()
