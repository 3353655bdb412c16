"""``bendbridge bridge | midi-learn``: live transport, MIDI and OSC into the render server."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bridge", help="follow the DAW live (OSC, MIDI) and request frames ahead of the playhead")
    p.add_argument("--server", default="tcp://127.0.0.1:5555")
    p.add_argument("--config", type=Path, required=True, help="bend config TOML ([render], [[bend]], [[param]], [[midi]])")
    p.add_argument("--output", default="live", help="session folder name under the server's output root")
    p.add_argument("--osc-port", type=int, default=9000, help="UDP port for REAPER/Ardour OSC (loopback)")
    p.add_argument("--osc-host", default="127.0.0.1")
    p.add_argument("--midi-in", default=None, help="MIDI input port name (CC mappings, clock)")
    p.add_argument("--midi-backend", default=None, help="mido backend, e.g. mido.backends.rtmidi/UNIX_JACK")
    p.add_argument("--clock", action="store_true", help="follow MIDI clock/SPP instead of OSC for the playhead")
    p.add_argument("--lookahead", type=float, default=0.5, help="seconds of frames requested ahead of the playhead")
    p.add_argument("--fps", default=None)
    p.add_argument("--keys", type=Path, default=None)
    p.add_argument("--client", default="client")
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


def _plan_and_config(path: Path):
    import tomllib

    from bendbridge.protocol.plan import BendPlan

    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    return cfg, BendPlan.from_dict({"bend": cfg.get("bend", [])})


def run_learn(args: argparse.Namespace) -> int:
    from bendbridge.bridge.midi_live import MODES, learn_from, load_cc_mappings, open_midi_input

    cfg, plan = _plan_and_config(args.config)
    bend, _, param = args.param.partition(".")
    load_cc_mappings({"midi": [{"source": "cc:1:0", "bend": bend, "param": param}]}, plan)  # checks bend and param
    port = open_midi_input(args.port, args.virtual, args.midi_backend)
    print(f"move a control on {args.virtual or args.port} to map it to {args.param} …", flush=True)
    deadline = time.monotonic() + args.timeout

    def messages():
        while time.monotonic() < deadline:
            for m in port.iter_pending():
                yield m
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


def run_bridge(args: argparse.Namespace) -> int:
    import threading

    from bendbridge.bridge.client import RenderClient
    from bendbridge.bridge.live import LiveBridge, ValueLane
    from bendbridge.bridge.mapping import load_mapping
    from bendbridge.bridge.midi_live import CcRouter, ClockFollower, load_cc_mappings, open_midi_input
    from bendbridge.bridge.osc_input import OscInput
    from bendbridge.bridge.tempo import TempoMap
    from bendbridge.bridge.timeline import FrameGrid, Timeline, parse_fps
    from bendbridge.protocol import SessionSetup

    cfg, plan = _plan_and_config(args.config)
    render = cfg.get("render", {})
    mapping = load_mapping(cfg, plan)
    router = CcRouter(load_cc_mappings(cfg, plan))
    clock = ClockFollower()
    tempo = TempoMap.constant(render.get("tempo", 120))
    tl = Timeline(FrameGrid(parse_fps(args.fps or str(render.get("fps", "24"))), 48_000), tempo)
    lanes = {s.name: ValueLane() for p in mapping.params for s in p.sources if s.kind == "lane"}
    stop = threading.Event()
    with RenderClient(args.server, keys=args.keys, client_name=args.client) as client, OscInput(args.osc_port, args.osc_host) as osc:
        client.setup(SessionSetup(prompts=tuple(render.get("prompts", ["a red circle on a blue background"])), output=args.output,
                                  seed=int(render.get("seed", 0)), steps=render.get("steps"), guidance=render.get("guidance"),
                                  plan=plan.to_dict(), mode="live"))
        if args.midi_in:
            port = open_midi_input(args.midi_in, None, args.midi_backend)

            def midi_loop():
                while not stop.is_set():
                    for m in port.iter_pending():
                        clock.feed(m, time.monotonic())
                        router.feed(m)
                    time.sleep(0.001)

            threading.Thread(target=midi_loop, daemon=True).start()

        def playhead():
            for name, lane in lanes.items():
                if name in osc.transport.lanes:
                    lane.value = osc.transport.lanes[name]
            if args.clock:
                return tl.tempo.seconds_at(clock.beats)
            return osc.transport.position()

        def cc_values():
            out: dict[str, dict[str, float]] = {}
            for (bend, param), v in router.values.items():
                out.setdefault(bend, {})[param] = v
            return out

        bridge = LiveBridge(client, tl, mapping, playhead, args.lookahead, lanes=lanes, cc_values=cc_values)
        print(f"bridge: OSC on udp://{args.osc_host}:{osc.port}, server {args.server}, lookahead {args.lookahead} s", flush=True)
        try:
            bridge.run(stop)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
    print(f"sent {bridge.requests} frame requests")
    return 0
