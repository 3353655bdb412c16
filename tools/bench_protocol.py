"""Loopback protocol benchmark against a real server process.

Prints, in one run: round-trip latency p50/p99 of a ``param_update`` (the server applies it and
acknowledges with a heartbeat; goal p99 < 1 ms) and throughput of ``feature_frame`` messages
(goal ≥ 20,000/s; a heartbeat after the burst marks when the server has processed them all),
plus the codec alone (encode + decode per message) for reference.

    bendbridge bench protocol [--model DIR] [--n 5000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

__all__ = ["main"]


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _round_trips(c, n: int) -> list[float]:
    """Seconds from sending a param_update to its acknowledging heartbeat, after 200 warm-up ones."""
    from bendbridge.protocol import Heartbeat, ParamUpdate

    rtts = []
    for i in range(n + 200):
        t = time.perf_counter()
        mid = c.send(ParamUpdate(params={"spin": {"angle": (i % 100) / 50}}))
        c.expect(Heartbeat, ref=mid)
        if i >= 200:
            rtts.append(time.perf_counter() - t)
    return rtts


def _burst(c, count: int) -> float:
    """Seconds for the server to take ``count`` feature frames (a heartbeat after them marks the end)."""
    from bendbridge.protocol import FeatureFrame, Heartbeat, encode

    features = {"rms": 0.1, "centroid": 1500.0, "flux": 0.2, "onset": 0.0}
    packets = [encode(FeatureFrame(sample=i * 512, features=features), session="bench") for i in range(count)]
    t = time.perf_counter()
    for data in packets:
        c.send_raw(data)
    mid = c.send(Heartbeat())
    c.expect(Heartbeat, ref=mid, timeout=300)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model folder for the server (default: embedded)")
    ap.add_argument("--n", type=int, default=5000, help="round trips to time")
    ap.add_argument("--features", type=int, default=50_000, help="feature frames in the throughput burst")
    args = ap.parse_args(argv)

    from bendbridge.bridge.client import RenderClient
    from bendbridge.protocol import FeatureFrame, SessionSetup, decode, encode

    from .cmd_server import spawn_server

    proc, url = spawn_server(
        "--output-root", tempfile.mkdtemp(prefix="bb-bench-"), *(["--model", args.model] if args.model else [])
    )
    plan = {"bend": [{"id": "spin", "op": "rotate_plane", "target": "latent", "params": {"angle": 0.0}}]}
    try:
        with RenderClient(url, timeout=120) as c:
            c.ping()
            c.setup(SessionSetup(prompts=("a red circle",), output="bench", mode="live", plan=plan))
            rtts = _round_trips(c, args.n)
            burst = _burst(c, args.features)
    finally:
        proc.terminate()
        proc.wait(10)
    msg = FeatureFrame(sample=1, features={"rms": 0.1, "centroid": 1500.0, "flux": 0.2, "onset": 0.0})
    t = time.perf_counter()
    for _ in range(20_000):
        decode(encode(msg))
    codec = (time.perf_counter() - t) / 20_000
    print(f"loopback {url}, server in its own process")
    print(
        f"param_update round trip ({args.n}): p50 {statistics.median(rtts) * 1e3:.3f} ms, "
        f"p99 {_percentile(rtts, 99) * 1e3:.3f} ms, max {max(rtts) * 1e3:.3f} ms  (goal p99 < 1 ms)"
    )
    print(
        f"feature_frame throughput: {args.features / burst:,.0f} messages/s over {args.features} ({burst:.2f} s)  "
        "(goal ≥ 20,000/s)"
    )
    print(f"codec alone: {codec * 1e6:.1f} µs per encode+decode of a feature frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
