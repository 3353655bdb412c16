"""Live throughput and latency, measured end to end, several models side by side in one run.

A JACK dummy server carries MIDI: this benchmark plays a controller on a JACK MIDI port, the live
bridge (following a steady transport from 0 s) maps it onto the demo's ``spin.angle``, the render
server (``bendbridge serve`` in its own process, as in a performance) renders with the demo
bends, and headless Chromium shows the frames on the viewer page. For each row, in turn, the
same script runs for ``--seconds``: frames delivered to the page per second, dropped and late
frames, latency from a request leaving the bridge to its frame coming back (p50/p99), CC sent →
the first frame carrying its value shown on the page, and the same server's offline batch
throughput.

Rows (``--rows``, comma-separated): ``MODEL[+tiny][/serial]`` — ``embedded`` (6 steps with
guidance, ``demo.toml``), ``fast`` (2 steps, ``demo_fast.toml``) or a folder; ``+tiny`` decodes
with the model's tiny decoder; ``/serial`` renders live frames in the server loop instead of the
denoise → deliver pipeline.

    bendbridge bench live [--rows embedded,fast+tiny/serial,fast+tiny] [--seconds 20] [--fps 30]
                          [--cc-every 1.5] [--lookahead 0.25] [--max-batch 8]

Needs jackd (jackd2), python-rtmidi, Chromium and websocket-client (the dev extra), and the
render side (``bendbridge[server]``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
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


DEFAULT_ROWS = "embedded,fast+tiny/serial,fast+tiny"


@dataclass(frozen=True)
class Row:
    """One row of the table: a model, its decoder and the server's live mode."""

    model: str
    tiny: bool = False
    serial: bool = False

    @classmethod
    def parse(cls, text: str) -> Row:
        model, _, mode = text.partition("/")
        if mode not in ("", "serial"):
            raise SystemExit(f"bench live: --rows: {text!r}: after '/' only 'serial' is allowed")
        model, _, decoder = model.partition("+")
        if decoder not in ("", "tiny"):
            raise SystemExit(f"bench live: --rows: {text!r}: after '+' only 'tiny' is allowed")
        return cls(model, decoder == "tiny", mode == "serial")

    @property
    def name(self) -> str:
        return self.model + ("+tiny" if self.tiny else "") + (" serial" if self.serial else "")


@dataclass
class Measured:
    row: Row
    delivered_fps: float
    stats: object  # bridge.live_status.LiveStats
    cc_latencies: list[float]
    cc_moves: int
    offline_fps: float
    alone: tuple[float, float, float]  # the server alone: frames/s delivered, latency p50 and p99 (s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--rows", default=DEFAULT_ROWS, help=f"comma-separated MODEL[+tiny][/serial] (default {DEFAULT_ROWS})"
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of live playback per row")
    ap.add_argument("--fps", default="30")
    ap.add_argument("--cc-every", type=float, default=1.5, help="seconds between controller moves")
    ap.add_argument("--lookahead", type=float, default=0.25)
    ap.add_argument("--max-batch", type=int, default=8, help="the server's largest batch")
    ap.add_argument("--server-threads", type=int, default=os.cpu_count() or 1, help="the server process's threads")
    args = ap.parse_args(argv)
    rows = [Row.parse(r.strip()) for r in args.rows.split(",") if r.strip()]
    jack = _jackd()
    try:
        return _run(args, rows)
    finally:
        jack.terminate()
        jack.wait(10)


def _run(args: argparse.Namespace, rows: list[Row]) -> int:
    import mido

    from bendbridge.bridge.midi_live import CcRouter
    from bendbridge.tools.chromium import Browser

    be = mido.Backend(BACKEND)
    midi_in = be.open_input("bb-bench-in", virtual=True)
    browser = Browser()
    results = []
    try:
        for row in rows:
            config, midi_maps = _config(row)
            router = CcRouter(midi_maps)
            feed = threading.Event()
            reader = threading.Thread(target=_midi_loop, args=(midi_in, router, feed), daemon=True)
            reader.start()
            try:
                results.append(_measure(args, row, config, midi_maps[0], router, be, browser))
            finally:
                feed.set()
                reader.join(5)  # before the port closes: closing an RtMidi port being read can deadlock
    finally:
        browser.close()
        time.sleep(0.1)
        midi_in.close()  # before jackd stops, or the MIDI backend aborts the process at exit
    return _report(args, results)


def _config(row: Row):
    from bendbridge.bridge.config import SessionConfig
    from bendbridge.bridge.demo_song import DEMO_CONFIG, DEMO_FAST_CONFIG, bundled_config
    from bendbridge.bridge.midi_live import load_cc_mappings

    demo = DEMO_FAST_CONFIG if row.model == "fast" else DEMO_CONFIG
    text = bundled_config(demo) + '\n[[midi]]\nsource = "cc:1:1"\nbend = "spin"\nparam = "angle"\ntakeover = false\n'
    config_path = Path(tempfile.mkdtemp(prefix="bb-bench-live-")) / "bench.toml"
    config_path.write_text(text)
    config = SessionConfig.load(config_path)
    return config, load_cc_mappings(config.tables, config.plan)


def _measure(args, row: Row, config, cc_map, router, be, browser) -> Measured:
    """One row: its own server and viewer, ``--seconds`` of live playback at ``--fps``."""
    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.live import LiveBridge
    from bendbridge.bridge.live_run import LiveRun
    from bendbridge.bridge.mapping import load_mapping
    from bendbridge.bridge.timeline import FrameGrid, Timeline, parse_fps
    from bendbridge.bridge.viewer import Viewer
    from bendbridge.protocol import SessionSetup
    from bendbridge.tools.cmd_server import spawn_server

    mapping = load_mapping(config.tables, config.plan)
    fps = parse_fps(args.fps)
    timeline = Timeline(FrameGrid(fps, 48_000), config.tempo, config.meter)
    root = Path(tempfile.mkdtemp(prefix="bb-bench-live-out-"))
    options = ["--model", row.model, "--output-root", str(root), "--max-batch", str(args.max_batch)]
    options += ["--decoder", "tiny"] * row.tiny + ["--live", "serial" if row.serial else "pipelined"]
    os.environ["OMP_NUM_THREADS"] = str(args.server_threads)  # the server process's CPU threads
    proc, url = spawn_server(*options)
    try:
        offline_fps = _offline_throughput(url, config, timeline)
        alone = _server_alone(url, config, timeline, args)
        with RenderClient(url) as client, Viewer() as viewer:
            client.setup(SessionSetup.for_settings(config.rendering(), output="live", fps=fps,
                                                   plan=config.plan.to_dict(), mode="live", deliver="png"))  # fmt: skip
            browser.call("Page.navigate", url=viewer.url)
            while viewer.watchers < 1:
                time.sleep(0.05)
            t0 = time.time()
            bridge = LiveBridge(client, timeline, mapping, lambda: Fraction(time.time() - t0).limit_denominator(10**6),
                                args.lookahead, cc_values=router.by_bend)  # fmt: skip
            run = LiveRun(bridge, viewer=viewer, out=open(os.devnull, "w"))  # noqa: SIM115
            played = threading.Event()
            sent, cc_out = _play_cc(be, args, played, t0)
            while time.time() - t0 < args.seconds:
                run.step()
                time.sleep(0.005)  # run_live's period
            played.set()
            time.sleep(1.0)
            run.step()
            log = browser.evaluate("window.bb.log")
            cc_out.close()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    latencies = _cc_latencies(sent, log, cc_map)
    return Measured(row, run.stats.delivered / args.seconds, run.stats, latencies, len(sent), offline_fps, alone)


def _midi_loop(port, router, stop: threading.Event) -> None:
    while not stop.is_set():
        for m in port.iter_pending():
            router.feed(m)
        time.sleep(0.005)  # the live command's own tick (run_live)


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


def _server_alone(url: str, config, timeline, args) -> tuple[float, float, float]:
    """The server's own live rate: a bare client asks for ``--fps`` frames a second, ``--lookahead``
    ahead of a wall clock, for ``--seconds`` (every bend moving); no bridge, no page, no MIDI.
    Returns frames/s delivered and the latency p50 / p99 (s) from request sent to frame back."""
    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.live_status import percentile
    from bendbridge.protocol import FrameReady, FrameRequest, SessionSetup

    fps = timeline.grid.fps
    with RenderClient(url) as client:
        client.setup(SessionSetup.for_settings(config.rendering(), output="alone", fps=fps, mode="live",
                                               plan=config.plan.to_dict(), deliver="png"))  # fmt: skip
        t0, i, sent, latencies, delivered = time.time(), 0, {}, [], 0
        while time.time() - t0 < args.seconds:
            while float(timeline.grid.time(i)) < time.time() - t0 + args.lookahead:
                p = timeline.position(i)
                params = {"spin": {"angle": 0.02 * i}, "pump": {"factor": 0.8 + 0.01 * (i % 40)},
                          "thump": {"mix": (i % 12) / 12}, "sweep": {"degrees": float(i % 20)}}  # fmt: skip
                client.send(FrameRequest(**p.wire(), params=params, deadline=t0 + float(p.seconds)), pos=p.sample)
                sent[i] = time.time()
                i += 1
            while client.sock.poll(2):
                m = client.recv(0).message
                if isinstance(m, FrameReady) and m.status != "dropped":
                    delivered += 1
                    latencies.append(time.time() - sent[m.frame])
    return delivered / args.seconds, percentile(latencies, 0.5), percentile(latencies, 0.99)


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
            request = FrameRequest(**p.wire(), params={})
            client.send(request, pos=p.sample)
        done = 0
        while done < frames:
            if isinstance(client.recv().message, FrameReady):
                done += 1
        return frames / (time.perf_counter() - t)


def _cc_latencies(sent, log, cc_map) -> list[float]:
    """For each controller move, seconds until the page first showed a frame carrying its value."""
    out = []
    for when, value in sent:
        want = cc_map.lo + value / 127 * (cc_map.hi - cc_map.lo)
        angle = lambda e: (e.get("params") or {}).get(cc_map.bend, {}).get(cc_map.param, 1e9)  # noqa: E731
        shown = [e["at"] for e in log if e["at"] >= when * 1000 and abs(angle(e) - want) < 1e-6]
        if shown:
            out.append(shown[0] / 1000 - when)
    return out


def _report(args, results: list[Measured]) -> int:
    from bendbridge.bridge.live_status import percentile

    def ms(values, q) -> str:
        return f"{1000 * percentile(list(values), q):.0f}" if values else "–"

    print(f"bench live: {args.fps} fps requested for {args.seconds:g} s per row, lookahead {args.lookahead} s, "
          f"demo bends, largest batch {args.max_batch}; latency = request leaving the bridge → frame back; "
          f"alone = the server with a bare client (no bridge, page or MIDI)")  # fmt: skip
    head = ("row", "fps", "dropped", "late", "lat p50", "p99", "CC→page p50", "p99", "offline fps", "× first",
            "alone fps", "p50", "p99")  # fmt: skip
    print("  " + "".join(f"{h:>12}" if i else f"{h:<20}" for i, h in enumerate(head)))
    base = results[0].delivered_fps if results else 0.0
    for m in results:
        st = m.stats
        cells = (f"{m.delivered_fps:.2f}", st.dropped, st.late, ms(st.latencies, 0.5), ms(st.latencies, 0.99),
                 ms(m.cc_latencies, 0.5), ms(m.cc_latencies, 0.99), f"{m.offline_fps:.2f}",
                 f"{m.delivered_fps / base:.2f}" if base else "–", f"{m.alone[0]:.2f}", ms([m.alone[1]], 0.5),
                 ms([m.alone[2]], 0.5))  # fmt: skip
        print(f"  {m.row.name:<20}" + "".join(f"{c:>12}" for c in cells))
    for m in results:
        print(f"  {m.row.name}: {m.stats.delivered} frames delivered of {m.stats.requested} requested; "
              f"{len(m.cc_latencies)}/{m.cc_moves} controller moves seen on the page")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
