"""Live latency and throughput, measured end to end in one run.

A JACK dummy server carries MIDI: this benchmark plays a controller on a JACK MIDI port, the live
bridge (following a steady transport from 0 s) maps it onto the demo's ``spin.angle``, the render
server (embedded model, in this process) renders with the demo bends, and headless Chromium shows
the frames on the viewer page. Measured: CC sent → the first frame carrying its value shown on the
page (p50/p99), frames delivered per second — side by side with the same server's offline batch
throughput for the same settings in the same run.

    bendbridge bench live [--seconds 30] [--fps 24] [--cc-every 1.5] [--lookahead 0.5] [--model fast]

Needs jackd (jackd2), python-rtmidi, Chromium and websocket-client (the dev extra), and the
render side (``bendbridge[server]``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path

__all__ = ["main"]

BACKEND = "mido.backends.rtmidi/UNIX_JACK"


def _jackd() -> subprocess.Popen:
    if shutil.which("jackd") is None:
        raise SystemExit("bench live: needs jackd (apt install jackd2)")
    name = f"bb-bench-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.environ["JACK_DEFAULT_SERVER"] = name
    import mido

    deadline = time.monotonic() + 15
    while True:
        try:
            mido.Backend(BACKEND).get_input_names()
            return proc
        except Exception:  # noqa: BLE001 (still starting)
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("bench live: jackd did not start") from None
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fps", default="24")
    ap.add_argument("--cc-every", type=float, default=1.5, help="seconds between controller moves")
    ap.add_argument("--lookahead", type=float, default=0.5)
    ap.add_argument("--model", default=None, help="embedded (default), fast (with its demo config), or a folder")
    args = ap.parse_args(argv)
    jack = _jackd()
    try:
        return _run(args)
    finally:
        jack.terminate()
        jack.wait(10)


def _run(args: argparse.Namespace) -> int:
    import mido

    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.config import SessionConfig
    from bendbridge.bridge.demo_song import DEMO_CONFIG, DEMO_FAST_CONFIG, bundled_config
    from bendbridge.bridge.live import LiveBridge
    from bendbridge.bridge.live_run import LiveRun
    from bendbridge.bridge.mapping import load_mapping
    from bendbridge.bridge.midi_live import CcRouter, load_cc_mappings
    from bendbridge.bridge.timeline import FrameGrid, Timeline, parse_fps
    from bendbridge.bridge.viewer import Viewer
    from bendbridge.protocol import SessionSetup
    from bendbridge.server.model import load_model
    from bendbridge.server.net.app import RenderServer, ServerConfig

    demo = DEMO_FAST_CONFIG if str(args.model) == "fast" else DEMO_CONFIG
    text = bundled_config(demo) + '\n[[midi]]\nsource = "cc:1:1"\nbend = "spin"\nparam = "angle"\ntakeover = false\n'
    config_path = Path(tempfile.mkdtemp(prefix="bb-bench-live-")) / "bench.toml"
    config_path.write_text(text)
    config = SessionConfig.load(config_path)
    mapping, midi_maps = load_mapping(config.tables, config.plan), load_cc_mappings(config.tables, config.plan)
    router = CcRouter(midi_maps)
    fps = parse_fps(args.fps)
    timeline = Timeline(FrameGrid(fps, 48_000), config.tempo, config.meter)
    model = load_model(args.model)
    args.model_name = model.name
    server = RenderServer(ServerConfig(control="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*",
                                       output_root=config_path.parent / "out"), model)  # fmt: skip
    stop = threading.Event()
    threading.Thread(target=server.serve_forever, args=(stop,), daemon=True).start()
    offline_fps = _offline_throughput(server.control_endpoint, config, timeline)
    be = mido.Backend(BACKEND)
    midi_in = be.open_input("bb-bench-in", virtual=True)
    threading.Thread(target=_midi_loop, args=(midi_in, router, stop), daemon=True).start()
    from bendbridge.tools.chromium import Browser

    with RenderClient(server.control_endpoint) as client, Viewer() as viewer:
        client.setup(SessionSetup.for_settings(config.rendering(), output="live", fps=fps,
                                               plan=config.plan.to_dict(), mode="live", deliver="png"))  # fmt: skip
        browser = Browser()
        browser.call("Page.navigate", url=viewer.url)
        while viewer.watchers < 1:
            time.sleep(0.05)
        t0 = time.time()
        bridge = LiveBridge(client, timeline, mapping, lambda: Fraction(time.time() - t0).limit_denominator(10**6),
                            args.lookahead, cc_values=router.by_bend)  # fmt: skip
        run = LiveRun(bridge, viewer=viewer, out=open(os.devnull, "w"))  # noqa: SIM115
        sent, cc_out = _play_cc(be, args, stop, t0)
        while time.time() - t0 < args.seconds:
            run.step()
            time.sleep(0.002)
        time.sleep(1.0)
        log = browser.evaluate("window.bb.log")
        browser.close()
    stop.set()
    time.sleep(0.1)
    cc_out.close()  # before jackd stops, or the MIDI backend aborts the process at exit
    midi_in.close()
    return _report(args, sent, log, run.stats, offline_fps, midi_maps[0])


def _midi_loop(port, router, stop: threading.Event) -> None:
    while not stop.is_set():
        for m in port.iter_pending():
            router.feed(m)
        time.sleep(0.0005)


def _play_cc(be, args, stop: threading.Event, t0: float) -> tuple[list[tuple[float, int]], object]:
    """Moves CC 1 to a new value every ``--cc-every`` seconds; returns the (wall time sent, value)
    list it fills, and the output port."""
    import mido

    name = next(n for n in be.get_output_names() if "bb-bench-in" in n)
    out = be.open_output(name)
    sent: list[tuple[float, int]] = []

    def loop() -> None:
        k = 0
        while not stop.is_set() and time.time() - t0 < args.seconds - 2:
            time.sleep(args.cc_every)
            value = 20 + (k * 37) % 100
            sent.append((time.time(), value))
            out.send(mido.Message("control_change", channel=0, control=1, value=value))
            k += 1

    threading.Thread(target=loop, daemon=True).start()
    return sent, out


def _offline_throughput(url: str, config, timeline, frames: int = 24) -> float:
    """Frames per second of the same server on an offline session (batches, as a bounce renders)."""
    from bendbridge.bridge.client import RenderClient
    from bendbridge.protocol import FrameReady, FrameRequest, SessionSetup

    with RenderClient(url, timeout=600) as client:
        client.setup(SessionSetup.for_settings(config.rendering(), output="offline", fps=timeline.grid.fps,
                                               plan=config.plan.to_dict(), mode="offline"))  # fmt: skip
        t = time.perf_counter()
        for i in range(frames):
            p = timeline.position(i)
            request = FrameRequest(frame=p.frame, sample=p.sample, seconds=float(p.seconds), beats=float(p.beats),
                                   bar=p.bar_beat.bar, beat=float(p.bar_beat.beat), params={})  # fmt: skip
            client.send(request, pos=p.sample)
        done = 0
        while done < frames:
            if isinstance(client.recv().message, FrameReady):
                done += 1
        return frames / (time.perf_counter() - t)


def _report(args, sent, log, stats, offline_fps, cc_map) -> int:
    from bendbridge.bridge.live_status import percentile

    latencies = []
    for when, value in sent:
        want = cc_map.lo + value / 127 * (cc_map.hi - cc_map.lo)
        angle = lambda e: (e.get("params") or {}).get(cc_map.bend, {}).get(cc_map.param, 1e9)  # noqa: E731
        shown = [e["at"] for e in log if e["at"] >= when * 1000 and abs(angle(e) - want) < 1e-6]
        if shown:
            latencies.append(shown[0] / 1000 - when)
    delivered_fps = stats.delivered / args.seconds
    print(
        f"bench live: {args.model_name} model, {args.seconds:g} s at {args.fps} fps requested, "
        f"lookahead {args.lookahead} s, demo bends"
    )
    print(f"  CC → frame on the page: {len(latencies)}/{len(sent)} controller moves seen; "
          f"p50 {1000 * statistics.median(latencies) if latencies else float('nan'):.0f} ms, "
          f"p99 {1000 * percentile(latencies, 0.99):.0f} ms")  # fmt: skip
    print(f"  delivered to the page:  {delivered_fps:.2f} frames/s ({stats.delivered} frames, "
          f"{stats.dropped} dropped, {stats.late} late)")  # fmt: skip
    print(f"  offline batches:        {offline_fps:.2f} frames/s (same model and settings)")
    if offline_fps > 0:
        print(f"  live / offline:         {delivered_fps / offline_fps:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
