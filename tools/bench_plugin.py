"""The native LV2 plugin's cost in the audio thread, and what a bridge that is away or stalled costs.

Builds the plugin and the minimal C host (``bb_bench_host``) into a temporary folder and runs,
side by side in one run, 1024-frame stereo blocks at 48 kHz with a time:Position every block:

- *listening, real time*: the bridge receives (this process), blocks paced in real time, as a host plays;
- *listening, back to back*: the same with no pause between blocks (a host rendering faster than
  real time; the bridge may fall behind and the plugin then drops);
- *no bridge*: nothing listens at the link, blocks back to back;
- *bridge stalled*: a socket is bound at the link but never read, blocks back to back.

For each it prints run() nanoseconds per block (median, p99, max; a block lasts 21.3 ms; the
harness does not run at real-time priority, so the maximum includes the OS preempting it), blocks
whose audio did not pass through unchanged (must be 0) and records dropped (counted by the
plugin). It is a measurement, not a test: figures depend on the machine and its load.

    bendbridge bench plugin [--paced 500] [--burst 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

BLOCK = 1024
RATE = 48_000


def _run(host: Path, library: Path, link: str, blocks: int, paced: bool) -> dict:
    r = subprocess.run(
        [str(host), str(library), str(RATE), str(BLOCK), str(blocks), str(int(paced))],
        env={**os.environ, "BENDBRIDGE_LINK": link},
        capture_output=True,
        text=True,
        timeout=blocks * BLOCK / RATE + 120,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return json.loads(r.stdout)


def _listening(host: Path, library: Path, blocks: int, paced: bool) -> dict:
    from bendbridge.bridge.plugin_link import PluginReceiver

    with PluginReceiver("tcp://127.0.0.1:*") as rx:
        result = _run(host, library, rx.url, blocks, paced)
        rx.done.wait(30)
        return result | {"received": rx.stream.records}


def _stalled(host: Path, library: Path, blocks: int) -> dict:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        return _run(host, library, f"tcp://127.0.0.1:{port}", blocks, paced=False)
    finally:
        sock.close(0)


def main(argv: list[str] | None = None) -> int:
    from bendbridge.plugin_stub.lv2_build import build_bench_host, build_bundle

    ap = argparse.ArgumentParser(prog="bendbridge bench plugin")
    ap.add_argument("--paced", type=int, default=500, help="blocks played in real time to a listening bridge")
    ap.add_argument("--burst", type=int, default=8000, help="blocks played back to back")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bb-bench-plugin-") as tmp:
        library = build_bundle(Path(tmp) / "plugins") / "bendbridge.so"
        host = build_bench_host(Path(tmp) / "bin")
        t = time.perf_counter()
        cases = {
            "listening, real time": _listening(host, library, args.paced, paced=True),
            "listening, back to back": _listening(host, library, args.burst, paced=False),
            "no bridge": _run(host, library, "tcp://127.0.0.1:9", args.burst, paced=False),
            "bridge stalled": _stalled(host, library, args.burst),
        }
        elapsed = time.perf_counter() - t
    print(f"run() per {BLOCK}-frame stereo block at {RATE} Hz (a block lasts {BLOCK / RATE * 1e3:.1f} ms):")
    head = f"{'case':<25}{'blocks':>7}{'median ns':>11}{'p99 ns':>10}{'max ns':>10}{'altered':>9}{'dropped':>9}"
    print(head + f"{'received':>10}")
    for name, r in cases.items():
        print(
            f"{name:<25}{r['blocks']:>7}{r['ns_median']:>11}{r['ns_p99']:>10}{r['ns_max']:>10}"
            f"{r['differing_blocks']:>9}{r['dropped']:>9.0f}{r.get('received', '-'):>10}"
        )
    print(f"a block makes 6 records (transport, macros, 4 audio chunks); the ring holds 4096; {elapsed:.0f} s in all")
    return 0
