"""``bendbridge plugin build``: build (and install) the native LV2 plugin; ``bendbridge host-sim``: play a
session through the Python plugin as a DAW would, then render it."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.values import finite_number

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    plugin = sub.add_parser("plugin", help="the native LV2 plugin that streams a DAW session to the bridge")
    actions = plugin.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="compile the LV2 plugin (needs a C compiler, lv2-dev, libzmq3-dev)")
    b.add_argument("--out", type=Path, default=None, help="folder to put bendbridge.lv2 in (default: ./build)")
    b.add_argument("--install", action="store_true", help="install into ~/.lv2, where LV2 hosts find it")
    b.set_defaults(run=run_plugin_build)
    r = sub.add_parser("record", help="record what the plugin in the DAW streams into a .bbs file (bounce --recorded)")
    r.add_argument("--link", default="tcp://127.0.0.1:5557", help="where the plugin sends (its BENDBRIDGE_LINK)")
    r.add_argument("--out", type=Path, required=True, help="the recording, a .bbs file")
    r.add_argument("--force", action="store_true", help="replace --out if it exists")
    r.add_argument(
        "--seconds", type=float, default=None, help="stop after this many seconds (default: the plugin's bye or Ctrl-C)"
    )
    r.set_defaults(run=run_record)

    p = sub.add_parser(
        "host-sim", help="play SONG (+ MIDI) block by block through the plugin stub, then bounce what it streamed"
    )
    p.add_argument("song", type=Path)
    p.add_argument(
        "--midi", type=Path, default=None, help="tempo map and CC lanes (sent as plugin parameter automation)"
    )
    p.add_argument("--config", type=Path, required=True, help="bend config TOML")
    p.add_argument("--out", type=Path, required=True, help="video file (.mp4 / .mov)")
    p.add_argument(
        "--block", type=int, action="append", default=None, help="block size (repeat to cycle through sizes)"
    )
    p.add_argument(
        "--random-blocks", default=None, metavar="LO-HI", help="a random block size in [LO, HI] for every block"
    )
    p.add_argument(
        "--realtime", action="store_true", help="pace the blocks in real time (default: as fast as possible)"
    )
    p.add_argument("--link", default="tcp://127.0.0.1:*", help="endpoint the bridge receives the plugin stream on")
    p.add_argument("--start", default=None)
    p.add_argument("--end", default=None)
    p.add_argument("--model", type=Path, default=None)
    p.set_defaults(run=run_host_sim)


def _block_sizes(args: argparse.Namespace):
    from bendbridge.plugin_stub.host import BlockSizes

    if not args.random_blocks:
        for size in args.block or []:
            finite_number(size, "--block", 1, 1 << 20, integer=True)
        return BlockSizes(args.block or [512])
    lo, _, hi = args.random_blocks.partition("-")
    if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 1 << 20):
        raise BendbridgeError(
            "--random-blocks", f"{args.random_blocks!r}: expected LO-HI with 1 ≤ LO ≤ HI ≤ {1 << 20}, e.g. 32-2048"
        )
    return BlockSizes(random_range=(int(lo), int(hi)))


def run_host_sim(args: argparse.Namespace) -> int:
    from bendbridge.bridge.bounce import BounceSpec, run_bounce
    from bendbridge.bridge.plugin_link import PluginReceiver
    from bendbridge.plugin_stub.host import HostSimulator
    from bendbridge.plugin_stub.streaming import StreamingPlugin

    from .cmd_bounce import local_rendering

    blocks = _block_sizes(args)
    spec = BounceSpec(
        audio=args.song, config=args.config, out=args.out, start=args.start, end=args.end, model=args.model
    )
    spec.check()  # before the session is played
    host = HostSimulator(args.song, args.midi)
    with PluginReceiver(args.link) as rx:
        plugin = StreamingPlugin(rx.url)
        n = host.play(plugin, blocks, realtime=args.realtime)
        if not rx.done.wait(60):
            raise BendbridgeError("--link", "the plugin stream did not finish within 60 s")
        print(
            f"played {n} blocks ({host.length / host.rate:.2f} s at {host.rate} Hz) through the plugin; "
            f"{plugin.sent} messages sent, {plugin.dropped} dropped; jumps followed: {len(rx.stream.jumps)}"
        )
        session = rx.stream.session(Path(tempfile.mkdtemp(prefix="bb-hostsim-")))
    spec.audio, spec.tempo, spec.meter, spec.extra_lanes = session.audio, session.tempo, session.meter, session.lanes
    summary = run_bounce(spec, local_rendering(args.model))
    print(summary)
    return 0


def run_plugin_build(args: argparse.Namespace) -> int:
    from bendbridge.plugin_stub.lv2_build import PLUGIN_URI, build_bundle, user_lv2_dir

    if args.install and args.out is not None:
        raise BendbridgeError("--install", "give either --out DIR or --install (which builds into ~/.lv2), not both")
    out = user_lv2_dir() if args.install else (args.out or Path("build"))
    bundle = build_bundle(out)
    print(f"built {bundle} ({PLUGIN_URI})")
    if not args.install:
        print(f"to use it, copy it to {user_lv2_dir()} or add {bundle.parent} to LV2_PATH")
    return 0


def run_record(args: argparse.Namespace) -> int:
    from bendbridge.bridge.plugin_link import PluginReceiver
    from bendbridge.bridge.recording import RecordingWriter

    if args.seconds is not None:
        finite_number(args.seconds, "--seconds", 0.0, None, lo_open=True)
    writer = RecordingWriter(args.out, overwrite=args.force)
    try:
        with PluginReceiver(args.link, record_to=writer) as rx:
            print(f"listening on {rx.url}: play the song in the DAW; Ctrl-C stops", flush=True)
            _wait(rx, args.seconds)
            stream = rx.snapshot()
    finally:
        writer.close()
    rate = stream.rate or 0
    print(
        f"recorded {stream.records} records into {args.out}: {stream.audio_end / rate if rate else 0:.2f} s of audio "
        f"at {rate} Hz, {len(stream.transports)} transports, {len(stream.jumps)} jumps, "
        f"lanes {sorted(stream.controls) + sorted(stream.events) or 'none'}"
    )
    for problem in stream.problems:
        print(f"  problem: {problem}")
    print(f"bounce it with: bendbridge bounce --recorded {args.out} --config CONFIG.toml --out VIDEO.mp4")
    return 0


def _wait(rx, seconds: float | None) -> None:
    """Until the plugin says bye, ``seconds`` pass, or Ctrl-C; a status line every second."""
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while not rx.done.wait(1.0):
            s = rx.stream
            print(f"\r  {s.audio_end / (s.rate or 1):8.2f} s of audio, {s.records} records", end="", flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    print()
