"""``bendbridge serve | ping | keys``: the render server from the command line."""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import DECODER_HELP, MODEL_HELP, PRECISION_HELP, PRECISIONS
from bendbridge.protocol.security import DEFAULT_CONTROL, DEFAULT_EVENTS
from bendbridge.protocol.values import finite_number

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the headless render server (ZeroMQ)")
    p.add_argument("--bind", default=DEFAULT_CONTROL, help=f"control endpoint, ROUTER (default {DEFAULT_CONTROL})")
    p.add_argument("--events", default=DEFAULT_EVENTS, help=f"event endpoint, PUB (default {DEFAULT_EVENTS})")
    p.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default=None, choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--decoder", default=None, help=DECODER_HELP)
    p.add_argument(
        "--output-root", type=Path, default=Path("renders"), help="every file the server writes goes under here"
    )
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument(
        "--live",
        choices=("pipelined", "serial"),
        default="pipelined",
        help="live sessions: render in parallel lanes beside the server loop (default), or in the loop",
    )
    p.add_argument(
        "--lanes", type=int, default=None, help="lanes per live session (default: one per CPU core up to 4; 1 on a GPU)"
    )
    p.add_argument("--lane-threads", type=int, default=1, help="CPU threads of each lane (default 1)")
    p.add_argument("--keys", type=Path, default=None, help="CURVE key folder (required to bind beyond loopback)")
    p.set_defaults(run=run_serve)

    p = sub.add_parser("ping", help="print the server's welcome and the round-trip time")
    p.add_argument("--server", default=DEFAULT_CONTROL)
    p.add_argument("--keys", type=Path, default=None)
    p.add_argument("--client", default="client", help="client key name in --keys")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(run=run_ping)

    p = sub.add_parser("keys", help="make CURVE keys: the server pair, and with --client a client pair it accepts")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--client", default=None)
    p.set_defaults(run=run_keys)


def spawn_server(*options: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``bendbridge serve OPTIONS`` in its own process, on free loopback ports unless the options name
    others; returns the process and its control endpoint, read from what it prints when ready.
    Its output stays readable on ``proc.stdout``; stop it with ``proc.terminate()``."""
    ports = [] if "--bind" in options else ["--bind", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*"]
    cmd = [sys.executable, "-m", "bendbridge.tools.cli", "serve", *ports, *options]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        m = re.search(r"control (\S+),", line)
        if m:
            return proc, m[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise BendbridgeError("serve", f"the server did not start: {''.join(seen)[-2000:]}")


def run_serve(args: argparse.Namespace) -> int:
    finite_number(args.max_batch, "--max-batch", 1, 1024, integer=True)
    if args.lanes is not None:
        finite_number(args.lanes, "--lanes", 1, 64, integer=True)
    finite_number(args.lane_threads, "--lane-threads", 1, 256, integer=True)
    from bendbridge.server.net.app import RenderServer, ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = ServerConfig(
        control=args.bind,
        events=args.events,
        model=args.model,
        device=args.device,
        precision=args.precision,
        decoder=args.decoder,
        output_root=args.output_root,
        max_batch=args.max_batch,
        keys=args.keys,
        pipeline=args.live == "pipelined",
        lanes=args.lanes,
        threads_per_lane=args.lane_threads,
    )
    server = RenderServer(config)
    w = server.welcome()
    print(
        f"bendbridge server: control {server.control_endpoint}, events {server.events_endpoint}, "
        f"model {w.model} on {w.device} in {str(server.model.pipe.unet.dtype).removeprefix('torch.')}, "
        f"output root {server.root}, auth {w.auth}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def run_ping(args: argparse.Namespace) -> int:
    from bendbridge.bridge.client import RenderClient, ServerTimeout

    with RenderClient(args.server, timeout=args.timeout, keys=args.keys, client_name=args.client) as c:
        try:
            w, rtt = c.ping()
        except ServerTimeout as e:
            print(f"bendbridge ping: {e}")
            return 1
    print(
        f"server {w.server} protocol {w.version} (package {w.package}), "
        f"model {w.model}, device {w.device}, auth {w.auth}"
    )
    print(f"operators ({len(w.operators)}): {', '.join(w.operators)}")
    print(f"targets: {len(w.targets)} (latent, text and {len(w.targets) - 2} modules), max batch {w.max_batch}")
    print(f"round trip {rtt * 1e3:.2f} ms")
    return 0


def run_keys(args: argparse.Namespace) -> int:
    from bendbridge.protocol.security import make_keys

    for f in make_keys(args.dir, args.client):
        print(f"wrote {f}")
    return 0
