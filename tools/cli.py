"""The ``bendbridge`` command: parse arguments, build a config, call the library.

Every mistake a user can make surfaces as a :class:`~bendbridge.protocol.errors.BendbridgeError`;
the command prints it as one line (``bendbridge COMMAND: error: FIELD: MESSAGE``) and exits with
status 2, as argparse does for its own usage errors.
"""

from __future__ import annotations

import argparse
import sys

from bendbridge.protocol.errors import BendbridgeError

from . import (
    cmd_adapt,
    cmd_analyse,
    cmd_bench,
    cmd_bounce,
    cmd_engine,
    cmd_inspect,
    cmd_live,
    cmd_plugin,
    cmd_server,
    cmd_steer,
)

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = (
    cmd_bounce,
    cmd_inspect,
    cmd_engine,
    cmd_steer,
    cmd_adapt,
    cmd_analyse,
    cmd_server,
    cmd_live,
    cmd_plugin,
    cmd_bench,
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bendbridge", description="Music-reactive network bending of diffusion models.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _COMMAND_MODULES:
        mod.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BendbridgeError as e:
        print(f"bendbridge {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
