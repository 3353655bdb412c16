"""``bendbridge bench NAME [options]``: run one of the benchmarks in tools/."""

from __future__ import annotations

import argparse
import importlib

__all__ = ["add_commands", "BENCHMARKS"]

BENCHMARKS = {
    "engine": "bendbridge.tools.bench_engine",
    "model": "bendbridge.tools.bench_model",
    "protocol": "bendbridge.tools.bench_protocol",
    "bounce": "bendbridge.tools.bench_bounce",
    "features": "bendbridge.tools.bench_features",
    "plugin": "bendbridge.tools.bench_plugin",
    "live": "bendbridge.tools.bench_live",
    "cluster": "bendbridge.tools.bench_cluster",
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help=f"run a benchmark ({', '.join(BENCHMARKS)}); options after the name go to it")
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("options", nargs=argparse.REMAINDER)
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    return int(importlib.import_module(BENCHMARKS[args.name]).main(args.options) or 0)
