"""``bendbridge bounce | demo``: song → network-bent video, exactly on the timeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from bendbridge.protocol.inversion import InversionSettings
from bendbridge.protocol.render import DECODER_HELP, MODEL_HELP, PRECISION_HELP, PRECISIONS

from .cmd_engine import inversion_args

__all__ = ["add_commands"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", default=None, help="frame rate, e.g. 24, 25, 30000/1001 (default: config, else 24)")
    p.add_argument("--start", default=None, help="seconds (12.5) or bar:beat (5:1); default 0")
    p.add_argument("--end", default=None, help="seconds or bar:beat; default the end of the song")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default: config, else the model's)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="frames per denoising pass (default 8)")
    p.add_argument("--frames", type=Path, default=None, help="also keep the PNG sequence (and manifest) in this folder")
    p.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    p.add_argument("--precision", default=None, choices=PRECISIONS, help=PRECISION_HELP + " (in this process)")
    p.add_argument("--decoder", default=None, help=DECODER_HELP + " (in this process)")
    p.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="render on a running 'bendbridge serve' (e.g. tcp://127.0.0.1:5555) instead of in this process",
    )
    p.add_argument(
        "--keys", type=Path, default=None, help="CURVE key folder for a --server beyond loopback (bendbridge keys)"
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="RAY",
        help="render on Ray workers: ray (a private Ray on this machine), ray://HOST:PORT or auto (a running cluster)",
    )
    p.add_argument("--workers", type=int, default=2, help="render workers with --cluster ray (default 2)")
    p.add_argument("--client", default="client", help="client key name in --keys")
    p.add_argument(
        "--server-timeout", type=float, default=300.0, help="seconds to wait for the next frame from --server"
    )
    p.add_argument("--out", type=Path, required=True, help="video file: .mp4 (H.264 + AAC) or .mov (ProRes + PCM)")
    p.add_argument(
        "--init-video",
        type=Path,
        default=None,
        metavar="VID",
        help="start each frame from this footage's picture at its time (DDIM-inverted), not from noise",
    )
    p.add_argument(
        "--init-image", type=Path, default=None, metavar="IMG", help="start every frame from this picture (inverted)"
    )
    inversion_args(p, "each footage picture (--init-video, --init-image)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bounce", help="render a song to a network-bent video with the song muxed in")
    p.add_argument(
        "--audio", type=Path, default=None, help="the song (any format pedalboard reads); with --recorded, optional"
    )
    p.add_argument(
        "--recorded",
        type=Path,
        default=None,
        help="a .bbs recording of the plugin (bendbridge record): its audio, tempo map, meter and macros",
    )
    p.add_argument("--midi", type=Path, default=None, help="MIDI file: tempo map, time signatures, CC lanes")
    p.add_argument("--rpp", type=Path, default=None, help="REAPER project: tempo envelope and automation")
    p.add_argument(
        "--ardour", type=Path, default=None, help="Ardour 7/8 session (.ardour): tempo map, meters and automation"
    )
    p.add_argument(
        "--dawproject", type=Path, default=None, help="DAWproject (.dawproject): tempo, time signatures, automation"
    )
    p.add_argument("--als", type=Path, default=None, help="Ableton Live set (.als): tempo, time signatures, automation")
    p.add_argument("--lanes", type=Path, action="append", default=[], help="JSON/CSV automation lanes (repeatable)")
    p.add_argument("--config", type=Path, required=True, help="bend config TOML: [render], [[bend]], [[param]]")
    _common(p)
    p.set_defaults(run=run_bounce)

    p = sub.add_parser("demo", help="synthesise the demo song and bounce it to a video")
    p.add_argument("--fast", action="store_true", help="on the fast model (2 steps, no guidance) with its demo config")
    p.add_argument(
        "--steer",
        action="store_true",
        help="the steering demo: a steering vector and an autoencoder feature driven by the song (embedded model)",
    )
    p.add_argument(
        "--adapter",
        action="store_true",
        help="the adapter demo: a personal concept (the dotted adapter) whose weight follows a lane (embedded model)",
    )
    p.add_argument(
        "--footage",
        action="store_true",
        help="the footage demo: the bundled clip (a sun rising over a sea), inverted frame by frame and bent "
        "(its 8 s unless --end)",
    )
    p.add_argument(
        "--song-dir", type=Path, default=None, help="where the demo song, MIDI and config go (default: beside --out)"
    )
    _common(p)
    p.set_defaults(run=run_demo)


SERVER_SIDE_MODULES = ("torch", "diffusers", "transformers", "safetensors")


def local_rendering(model: Path | None, precision: str | None = None, decoder: str | None = None):
    """In-process rendering on ``model``, or None where the render side (``bendbridge[server]``) is not installed."""
    try:
        from bendbridge.server.render.local_frames import local_rendering as server_local_rendering
    except ImportError as e:
        if (e.name or "").split(".")[0] in SERVER_SIDE_MODULES:
            return None
        raise
    return server_local_rendering(model, precision=precision, decoder=decoder)


def _spec(args: argparse.Namespace, audio: Path, config: Path, midi: Path | None = None, **sources):
    from bendbridge.bridge.bounce import BounceSpec

    return BounceSpec(
        audio=audio,
        config=config,
        out=args.out,
        midi=midi,
        **sources,
        fps=args.fps,
        start=args.start,
        end=args.end,
        size=args.size,
        steps=args.steps,
        seed=args.seed,
        batch=args.batch,
        frames=args.frames,
        model=args.model,
        server=args.server,
        server_keys=args.keys,
        server_client=args.client,
        server_timeout=args.server_timeout,
        cluster=args.cluster,
        workers=args.workers,
        init_video=args.init_video,
        init_image=args.init_image,
        inversion=InversionSettings(args.invert_to, args.invert_iterations),
    )


def _bounce(spec, args: argparse.Namespace) -> object:
    from bendbridge.bridge.bounce import BounceError, run_bounce

    spec.check()  # before anything is imported for rendering
    if spec.server or spec.cluster:
        for option in ("precision", "decoder"):
            if getattr(args, option) is not None:
                where = f"give --{option} to 'bendbridge serve'" if spec.server else "its workers use the model's own"
                raise BounceError(f"--{option}", f"with --{'server' if spec.server else 'cluster'}, {where}")
        if spec.cluster:
            from bendbridge.server.cluster_worker import RenderWorker  # torch-free: workers import the renderer

            return run_bounce(spec, None, cluster_worker=RenderWorker)
        return run_bounce(spec, None)
    return run_bounce(spec, local_rendering(spec.model, args.precision, args.decoder))


def run_bounce(args: argparse.Namespace) -> int:
    import shutil

    from bendbridge.bridge.bounce import BounceError

    if args.audio is None and args.recorded is None:
        raise BounceError("--audio", "the song is required (or --recorded FILE.bbs, which holds it)")
    spec = _spec(
        args,
        args.audio,
        args.config,
        args.midi,
        rpp=args.rpp,
        ardour=args.ardour,
        dawproject=args.dawproject,
        als=args.als,
        lanes=args.lanes,
    )
    folder = None
    if args.recorded is not None:
        folder = args.out.parent / f".{args.out.stem}.recorded"
        _use_recording(spec, args.recorded, folder)
    try:
        summary = _bounce(spec, args)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    print(summary)
    return 0 if not (summary.nan_frames or summary.black_frames) else 1


def _use_recording(spec, recorded: Path, folder: Path) -> None:
    """The recording's audio (unless --audio names the song), tempo map, meter and lanes."""
    from bendbridge.bridge.bounce import BounceError
    from bendbridge.bridge.recording import read_recording

    spec.check_video()
    for option, _ in spec.project_files():
        raise BounceError(option, "a recording brings its own tempo map: give --recorded or " + option)
    stream = read_recording(recorded)
    session = stream.session(folder)
    spec.audio = spec.audio or session.audio
    spec.tempo, spec.meter, spec.extra_lanes = session.tempo, session.meter, session.lanes
    spec.notes = [f"{recorded.name}: {p}" for p in stream.problems]


def run_demo(args: argparse.Namespace) -> int:
    from bendbridge.bridge.bounce import BounceError
    from bendbridge.bridge.demo_song import (
        DEMO_ADAPTER_CONFIG,
        DEMO_CLIP_SECONDS,
        DEMO_CONFIG,
        DEMO_FAST_CONFIG,
        DEMO_FOOTAGE_CONFIG,
        DEMO_STEER_CONFIG,
        bundled_config,
        write_demo,
        write_demo_clip,
    )
    from bendbridge.bridge.video import check_video_path

    check_video_path(args.out, "--out")  # before the song is synthesised

    config = DEMO_CONFIG
    chosen = [f"--{flag}" for flag in ("steer", "adapter", "footage") if getattr(args, flag)]
    if len(chosen) > 1:
        raise BounceError(chosen[1], f"give one of --steer, --adapter, --footage, not {' and '.join(chosen)}")
    for flag in ("init_video", "init_image"):
        if args.footage and getattr(args, flag) is not None:
            option = "--" + flag.replace("_", "-")
            raise BounceError(option, f"--footage is the demo with the bundled clip: give --footage or {option}")
    for flag, what, special in (
        ("steer", "steering", DEMO_STEER_CONFIG),
        ("adapter", "adapter", DEMO_ADAPTER_CONFIG),
        ("footage", "footage", DEMO_FOOTAGE_CONFIG),
    ):
        if getattr(args, flag):
            if args.fast or args.model is not None:
                raise BounceError(
                    f"--{flag}", f"the {what} demo's files are made for the embedded model: drop --fast/--model"
                )
            config = special
    if args.fast:
        if args.model is not None:
            raise BounceError("--fast", "--fast is the fast model: give --fast or --model, not both")
        args.model, config = Path("fast"), DEMO_FAST_CONFIG
    folder = args.song_dir or args.out.parent / "demo_song"
    paths = write_demo(folder, config)
    print(f"demo song, MIDI and config in {folder}")
    if paths["config"].read_text(encoding="utf-8") != bundled_config(config):
        print(
            f"note: using the existing {paths['config']}, which differs from the bundled demo config "
            f"(delete it to get the current one)"
        )
    if args.footage:
        args.init_video = write_demo_clip(folder)
        args.end = args.end or str(DEMO_CLIP_SECONDS)
    summary = _bounce(_spec(args, paths["audio"], paths["config"], paths["midi"]), args)
    print(summary)
    return 0
