"""``bendbridge inspect FILE``: what bendbridge reads from a project file, as text and a figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from bendbridge.bridge.projects import FORMATS, read_project
from bendbridge.bridge.report import describe, plot, select_lanes

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help=f"print the tempo map, meters, lanes and warnings read from a project file ({', '.join(sorted(FORMATS))})",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--all", action="store_true", help="list every tempo change and lane (default: the first 24)")
    p.add_argument("--plot", type=Path, default=None, help="also draw tempo and lanes over the bars into this PNG")
    p.add_argument(
        "--lanes", nargs="+", default=None, metavar="GLOB", help="lanes to draw (shell patterns; default: the first 12)"
    )
    p.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    project = read_project(args.file)
    print(describe(project, every=args.all))
    if args.plot:
        lanes = select_lanes(project, args.lanes)
        out = plot(project, args.plot, lanes if args.lanes else lanes[:12])
        print(f"\nplot: {out} (tempo and {min(len(lanes), 12) if not args.lanes else len(lanes)} lane(s))")
    return 0
