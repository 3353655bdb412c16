"""``bendbridge bridge | midi-learn``: live transport, MIDI and OSC into the render server."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from bendbridge.bridge.sync import SOURCES
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
    p.add_argument(
        "--sync",
        default=None,
        choices=SOURCES,
        help="the clock to follow: osc (REAPER/Ardour OSC, the default), clock (MIDI clock + song position on "
        "--midi-in), jack (JACK transport), link (Ableton Link), mtc (MIDI Time Code on --midi-in)",
    )
    p.add_argument("--clock", action="store_true", help="the same as --sync clock")
    p.add_argument("--quantum", type=float, default=4.0, help="--sync link: beats per phase cycle (default 4)")
    p.add_argument(
        "--link-free", action="store_true", help="--sync link: run from joining, ignoring the session's start/stop"
    )
    for flag, what in [
        ("--midi", "MIDI file"),
        ("--rpp", "REAPER project"),
        ("--ardour", "Ardour session"),
        ("--dawproject", "DAWproject"),
        ("--als", "Ableton Live set"),
    ]:
        p.add_argument(
            flag, type=Path, default=None, help=f"{what}: the tempo map, meters and automation lanes the playhead reads"
        )
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
    p.add_argument(
        "--rate",
        type=int,
        default=None,
        help="the DAW session's sample rate, Hz (default 48000; JACK's own with --sync jack)",
    )
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


def _follow_midi(port, consumers, stop: threading.Event, missing: set[str]) -> None:
    """Feed every message of ``port`` to each ``consumer(message, arrival_time)`` until ``stop`` is set
    (a daemon thread polling every millisecond). A port that goes away is named in ``missing``; its
    controls hold their last values."""

    def loop() -> None:
        while not stop.is_set():
            try:
                for m in port.iter_pending():
                    t = time.monotonic()
                    for consume in consumers:
                        consume(m, t)
            except Exception as e:  # noqa: BLE001 (a vanished device raises whatever its backend raises)
                missing.add(f"MIDI port {getattr(port, 'name', '?')} ({type(e).__name__})")
                return
            time.sleep(0.001)

    threading.Thread(target=loop, daemon=True, name="midi-in").start()


def _sync_choice(args: argparse.Namespace) -> str:
    """--sync, with --clock as its older spelling; checked against --link and --midi-in."""
    if args.clock and args.sync not in (None, "clock"):
        raise BendbridgeError("--clock", f"--clock is --sync clock; it cannot go with --sync {args.sync}")
    sync = "clock" if args.clock else (args.sync or "osc")
    if args.link and sync != "osc":
        flag = "--clock" if args.clock else "--sync"
        what = f"{flag} (MIDI clock)" if args.clock else f"--sync {sync}"
        raise BendbridgeError(flag, f"give --link (the plugin's transport) or {what}, not both")
    if sync in ("clock", "mtc") and not args.midi_in:
        raise BendbridgeError("--midi-in", f"--sync {sync} reads MIDI: name the input port with --midi-in")
    if sync != "link" and (args.link_free or args.quantum != 4.0):
        raise BendbridgeError("--quantum" if args.quantum != 4.0 else "--link-free", "only --sync link uses it")
    return sync


def _project(args: argparse.Namespace):
    """The project file whose tempo map, meters and lanes the live playhead reads, or None."""
    from bendbridge.bridge.projects import read_project

    given = [(f, getattr(args, f)) for f in ("midi", "rpp", "ardour", "dawproject", "als") if getattr(args, f)]
    if len(given) > 1:
        raise BendbridgeError(f"--{given[1][0]}", f"give one project file, not --{given[0][0]} and --{given[1][0]}")
    if not given:
        return None
    fmt, path = given[0]
    return read_project(path, ".mid" if fmt == "midi" else f".{fmt}")  # read as the flag says, whatever its suffix


def _sync_source(sync: str, args: argparse.Namespace, tempo_bpm: float):
    """The live clock for --sync jack/link/mtc (a SyncSource), None for osc and MIDI clock."""
    if sync == "jack":
        from bendbridge.bridge.sync_jack import JackTransport

        return JackTransport(args.rate)
    if sync == "link":
        from bendbridge.bridge.sync_link import LinkSession

        return LinkSession(args.quantum, tempo_bpm, free=args.link_free)
    if sync == "mtc":
        from bendbridge.bridge.mtc import MtcFollower

        return MtcFollower()
    return None


def run_bridge(args: argparse.Namespace) -> int:
    from bendbridge.bridge.config import SessionConfig
    from bendbridge.bridge.live import ValueLane
    from bendbridge.bridge.mapping import load_mapping
    from bendbridge.bridge.midi_live import CcRouter, ClockFollower, load_cc_mappings, open_midi_input
    from bendbridge.bridge.timeline import FrameGrid, Timeline, parse_fps

    finite_number(args.view_port, "--view-port", 0, 65535, integer=True)
    if args.rate is not None:
        finite_number(args.rate, "--rate", 8_000, 768_000, integer=True)
    sync = _sync_choice(args)
    config = SessionConfig.load(args.config)
    config.rendering()  # render settings are checked before anything starts
    mapping = load_mapping(config.tables, config.plan)
    router, clock = CcRouter(load_cc_mappings(config.tables, config.plan)), ClockFollower()
    project = _project(args)
    tempo, meter = (project.tempo, project.meter) if project else (config.tempo, config.meter)
    file_lanes = project.lanes if project else {}
    names = {s.name for p in mapping.params for s in p.sources if s.kind == "lane"}
    lanes = {name: file_lanes.get(name) or ValueLane() for name in names}
    _check_audio_in(args)
    source = _sync_source(sync, args, float(tempo.bpm_at(0)))
    try:
        if args.rate is None:  # the session's rate: JACK's own when following it, else 48 kHz
            args.rate = int(source.client.samplerate) if sync == "jack" else 48_000
        fps = parse_fps(args.fps, "--fps") if args.fps else config.fps
        timeline = Timeline(FrameGrid(fps, args.rate), tempo, meter)
        port = open_midi_input(args.midi_in, None, args.midi_backend) if args.midi_in else None
        if args.link:
            return _bridge_on_link(args, config, mapping, timeline, lanes, router, port, threading.Event())
        consumers = [lambda m, t: clock.feed(m, t), lambda m, t: router.feed(m)]
        if sync == "mtc":
            consumers.insert(0, source.feed)
        follow = source.playhead if source is not None else None
        if sync == "clock":
            follow = lambda: timeline.tempo.seconds_at(clock.beats)  # noqa: E731
        return _bridge_on_osc(args, config, mapping, timeline, lanes, router, port, consumers, source, follow)
    finally:
        if source is not None:
            source.close()


def _check_audio_in(args: argparse.Namespace) -> None:
    from bendbridge.bridge.audio_in import parse_audio_in

    heard_from = parse_audio_in(args.audio_in)[0] if args.audio_in else None
    if args.link and heard_from not in (None, "plugin"):
        raise BendbridgeError("--audio-in", "with --link the features hear the plugin's audio: drop one of them")
    if not args.link and heard_from == "plugin":
        raise BendbridgeError("--audio-in", "plugin audio comes with --link (the plugin's stream)")


def _bridge_on_osc(args, config, mapping, timeline, lanes, router, port, consumers, source, follow) -> int:
    """The live bridge on OSC: its lanes, and its playhead unless ``follow`` gives one (a clock)."""
    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.live import LiveBridge, ValueLane
    from bendbridge.bridge.live_run import LiveRun, run_live
    from bendbridge.bridge.osc_input import OscInput, OscTransport

    stop = threading.Event()
    with (
        _audio(args) as audio,
        RenderClient(args.server, keys=args.keys, client_name=args.client, rate=args.rate) as client,
        OscInput(args.osc_port, args.osc_host, OscTransport(rate=args.rate)) as osc,
        _viewer(args) as viewer,
    ):
        _setup(client, args, config, timeline, viewer)
        midi_missing: set[str] = set()
        if port is not None:
            _follow_midi(port, consumers, stop, midi_missing)

        def playhead():
            for name, lane in lanes.items():
                if isinstance(lane, ValueLane) and name in osc.transport.lanes:
                    lane.value = osc.transport.lanes[name]
            return follow() if follow is not None else osc.transport.position()

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
            sync=source,
        )
        where = f", viewer {viewer.url}" if viewer else ""
        heard = f", audio: {audio.name}" if audio else ", no audio input (--audio-in)"
        clock_name = source.name if source is not None else "MIDI clock" if follow is not None else "OSC"
        print(
            f"bridge: OSC on udp://{args.osc_host}:{osc.port}, playhead from {clock_name}, server {args.server}"
            f"{where}{heard}",
            flush=True,
        )
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
            _follow_midi(port, [lambda m, t: router.feed(m)], stop, midi_missing)
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
