"""``bendbridge bridge | midi-learn``: live transport, MIDI and OSC into the render server."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.values import finite_number

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bridge", help="follow the DAW live (OSC, MIDI) and request frames ahead of the playhead")
    p.add_argument("--server", default="tcp://127.0.0.1:5555")
    p.add_argument(
        "--config", type=Path, required=True, help="bend config TOML ([render], [[bend]], [[param]], [[midi]])"
    )
    p.add_argument("--output", default="live", help="session folder name under the server's output root")
    p.add_argument("--osc-port", type=int, default=9000, help="UDP port for REAPER/Ardour OSC (loopback)")
    p.add_argument("--osc-host", default="127.0.0.1")
    p.add_argument("--midi-in", default=None, help="MIDI input port name (CC mappings, clock)")
    p.add_argument("--midi-backend", default=None, help="mido backend, e.g. mido.backends.rtmidi/UNIX_JACK")
    p.add_argument("--clock", action="store_true", help="follow MIDI clock/SPP instead of OSC for the playhead")
    p.add_argument(
        "--link",
        default=None,
        metavar="URL",
        help="follow the bendbridge plugin in the DAW (it sends to tcp://127.0.0.1:5557): playhead, tempo map, "
        "macros and audio features, instead of OSC or MIDI clock",
    )
    p.add_argument(
        "--audio-in",
        default=None,
        metavar="SOURCE",
        help="live audio for the features: jack:PORT (e.g. jack:REAPER:out1), device:NAME, or plugin "
        "(the default with --link); without it, audio features hold a neutral value",
    )
    p.add_argument("--lookahead", type=float, default=0.5, help="seconds of frames requested ahead of the playhead")
    p.add_argument("--fps", default=None)
    p.add_argument("--rate", type=int, default=48_000, help="the DAW session's sample rate, Hz")
    p.add_argument("--keys", type=Path, default=None)
    p.add_argument("--client", default="client")
    p.add_argument("--no-view", action="store_true", help="no viewer page (frames are still written by the server)")
    p.add_argument("--view-host", default="127.0.0.1", help="address the viewer page is served on (loopback)")
    p.add_argument("--view-port", type=int, default=8765, help="port of the viewer page (0: any free port)")
    p.add_argument(
        "--view-remote", action="store_true", help="allow --view-host beyond loopback (other machines can watch)"
    )
    p.set_defaults(run=run_bridge)

    p = sub.add_parser("midi-learn", help="map the next moved MIDI control to a bend parameter in the config")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--param", required=True, help="BEND.PARAM, e.g. spin.angle")
    p.add_argument("--mode", default="absolute", choices=["absolute", "relative", "centred"])
    p.add_argument("--port", default=None, help="MIDI input port name")
    p.add_argument("--virtual", default=None, help="open a virtual input port with this name instead")
    p.add_argument("--midi-backend", default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(run=run_learn)


def run_learn(args: argparse.Namespace) -> int:
    from bendbridge.bridge.config import SessionConfig
    from bendbridge.bridge.midi_live import MODES, learn_from, load_cc_mappings, open_midi_input

    config = SessionConfig.load(args.config)
    bend, _, param = args.param.partition(".")
    load_cc_mappings(
        {"midi": [{"source": "cc:1:0", "bend": bend, "param": param}]}, config.plan
    )  # checks bend and param
    port = open_midi_input(args.port, args.virtual, args.midi_backend)
    print(f"move a control on {args.virtual or args.port} to map it to {args.param} …", flush=True)
    deadline = time.monotonic() + args.timeout

    def messages():
        while time.monotonic() < deadline:
            yield from port.iter_pending()
            time.sleep(0.005)

    source = learn_from(messages())
    port.close()
    if source is None:
        print("no control moved before the timeout")
        return 1
    assert args.mode in MODES
    with open(args.config, "a", encoding="utf-8") as f:
        f.write(f'\n[[midi]]\nsource = "{source}"\nbend = "{bend}"\nparam = "{param}"\nmode = "{args.mode}"\n')
    print(f"mapped {source} → {args.param} ({args.mode}) in {args.config}")
    return 0


def _follow_midi(port, clock, router, stop: threading.Event, missing: set[str]) -> None:
    """Feed MIDI clock and CC messages from ``port`` until ``stop`` is set (a daemon thread). A port
    that goes away is named in ``missing``; its controls hold their last values."""

    def loop() -> None:
        while not stop.is_set():
            try:
                for m in port.iter_pending():
                    clock.feed(m, time.monotonic())
                    router.feed(m)
            except Exception as e:  # noqa: BLE001 (a vanished device raises whatever its backend raises)
                missing.add(f"MIDI port {getattr(port, 'name', '?')} ({type(e).__name__})")
                return
            time.sleep(0.001)

    threading.Thread(target=loop, daemon=True, name="midi-in").start()


def run_bridge(args: argparse.Namespace) -> int:
    from bendbridge.bridge.audio_in import parse_audio_in
    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.config import SessionConfig
    from bendbridge.bridge.live import LiveBridge, ValueLane
    from bendbridge.bridge.live_run import LiveRun, run_live
    from bendbridge.bridge.mapping import load_mapping
    from bendbridge.bridge.midi_live import CcRouter, ClockFollower, load_cc_mappings, open_midi_input
    from bendbridge.bridge.osc_input import OscInput, OscTransport
    from bendbridge.bridge.timeline import FrameGrid, Timeline, parse_fps

    finite_number(args.rate, "--rate", 8_000, 768_000, integer=True)
    finite_number(args.view_port, "--view-port", 0, 65535, integer=True)
    if args.link and args.clock:
        raise BendbridgeError("--clock", "give --link (the plugin's transport) or --clock (MIDI clock), not both")
    config = SessionConfig.load(args.config)
    config.rendering()  # render settings are checked before anything starts
    mapping = load_mapping(config.tables, config.plan)
    router, clock = CcRouter(load_cc_mappings(config.tables, config.plan)), ClockFollower()
    timeline = Timeline(
        FrameGrid(parse_fps(args.fps, "--fps") if args.fps else config.fps, args.rate), config.tempo, config.meter
    )
    lanes = {s.name: ValueLane() for p in mapping.params for s in p.sources if s.kind == "lane"}
    heard_from = parse_audio_in(args.audio_in)[0] if args.audio_in else None
    if args.link and heard_from not in (None, "plugin"):
        raise BendbridgeError("--audio-in", "with --link the features hear the plugin's audio: drop one of them")
    if not args.link and heard_from == "plugin":
        raise BendbridgeError("--audio-in", "plugin audio comes with --link (the plugin's stream)")
    port = open_midi_input(args.midi_in, None, args.midi_backend) if args.midi_in else None
    stop = threading.Event()
    if args.link:
        return _bridge_on_link(args, config, mapping, timeline, lanes, router, port, stop)
    with (
        _audio(args) as audio,
        RenderClient(args.server, keys=args.keys, client_name=args.client, rate=args.rate) as client,
        OscInput(args.osc_port, args.osc_host, OscTransport(rate=args.rate)) as osc,
        _viewer(args) as viewer,
    ):
        _setup(client, args, config, timeline, viewer)
        midi_missing: set[str] = set()
        if port is not None:
            _follow_midi(port, clock, router, stop, midi_missing)

        def playhead():
            for name, lane in lanes.items():
                if name in osc.transport.lanes:
                    lane.value = osc.transport.lanes[name]
            return timeline.tempo.seconds_at(clock.beats) if args.clock else osc.transport.position()

        features = _live_features(config, audio, mapping.smoothing)
        bridge = LiveBridge(
            client,
            timeline,
            mapping,
            playhead,
            args.lookahead,
            features=features,
            lanes=lanes,
            cc_values=router.by_bend,
        )
        where = f", viewer {viewer.url}" if viewer else ""
        heard = f", audio: {audio.name}" if audio else ", no audio input (--audio-in)"
        print(f"bridge: OSC on udp://{args.osc_host}:{osc.port}, server {args.server}{where}{heard}", flush=True)
        run_live(LiveRun(bridge, viewer=viewer, inputs_missing=lambda: midi_missing, audio=audio), stop)
    return 0


def _audio(args: argparse.Namespace):
    """The live audio input (a context manager), or None without --audio-in."""
    import contextlib

    from bendbridge.bridge.audio_in import open_audio_input

    audio = open_audio_input(args.audio_in) if args.audio_in else None
    return audio if audio is not None else contextlib.nullcontext(None)


def _live_features(config, audio, smoothing):
    """Features of the live audio at its own rate, with the config's analysis window and smoothing."""
    if audio is None:
        return None
    from bendbridge.bridge.features import FeatureConfig
    from bendbridge.bridge.live import LiveFeatures

    analysis = FeatureConfig(rate=audio.rate, window=config.feature_window)
    return LiveFeatures(audio.rate, analysis=analysis, smoothing=smoothing)


def _viewer(args: argparse.Namespace):
    """The viewer page (a context manager), or a stand-in that is None when --no-view."""
    import contextlib

    from bendbridge.bridge.viewer import Viewer

    if args.no_view:
        return contextlib.nullcontext(None)
    return Viewer(args.view_host, args.view_port, allow_remote=args.view_remote)


def _setup(client, args: argparse.Namespace, config, timeline, viewer) -> None:
    """Ping the server and open the live session (frames come back as PNG when a page shows them)."""
    from bendbridge.protocol import SessionSetup

    client.ping()  # no server answering is reported within the client's timeout, not the setup's
    client.setup(
        SessionSetup.for_settings(
            config.rendering(),
            output=args.output,
            fps=timeline.grid.fps,
            plan=config.plan.to_dict(),
            mode="live",
            deliver="png" if viewer is not None else "path",
        )
    )


def _bridge_on_link(args, config, mapping, timeline, lanes, router, port, stop: threading.Event) -> int:
    """The live bridge following the plugin in the DAW (see bendbridge.bridge.plugin_live)."""
    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.live import LiveBridge
    from bendbridge.bridge.live_run import LiveRun, run_live
    from bendbridge.bridge.midi_live import ClockFollower
    from bendbridge.bridge.plugin_link import PluginReceiver
    from bendbridge.bridge.plugin_live import PluginFollower

    with (
        RenderClient(args.server, keys=args.keys, client_name=args.client, rate=args.rate) as client,
        PluginReceiver(args.link) as receiver,
        _viewer(args) as viewer,
    ):
        _setup(client, args, config, timeline, viewer)
        midi_missing: set[str] = set()
        if port is not None:
            _follow_midi(port, ClockFollower(), router, stop, midi_missing)
        follower = PluginFollower(
            receiver,
            timeline,
            lanes,
            report=lambda text: print(f"bridge: {text}", flush=True),
            smoothing=mapping.smoothing,
        )
        bridge = LiveBridge(
            client,
            timeline,
            mapping,
            follower.playhead,
            args.lookahead,
            features=follower,
            lanes=lanes,
            cc_values=router.by_bend,
        )
        where = f", viewer {viewer.url}" if viewer else ""
        print(f"bridge: following the plugin on {receiver.url}, server {args.server}{where}", flush=True)
        run_live(LiveRun(bridge, viewer=viewer, inputs_missing=lambda: midi_missing), stop)
    print(f"{len(receiver.stream.problems)} stream problems")
    return 0
