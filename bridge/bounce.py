"""Offline bounce: a song (+ MIDI / REAPER project / lanes) and a bend config → a video.

Frame count: the bounce covers [start, end) of the timeline; frame i is shown at
start + i/fps, and there are ceil((end − start) · fps) frames — every frame whose time falls
before ``end``. The video therefore lasts n/fps ≥ end − start (less than one frame longer), and
the audio is cut to exactly the same span [start, start + n/fps).

Frames are rendered in batches, written atomically with a JSON-lines manifest into a work folder
(``--frames DIR``, or a hidden ``.NAME.bounce`` folder beside the video that is removed after a
successful encode). Killed and started again with the same command, a bounce renders only the
frames that are missing and produces the same video.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bendbridge.protocol.plan import BendPlan, PlanError

from .features import FeatureConfig, extract_features, load_audio, normalise, smooth
from .lanes import AutomationLane, load_lanes
from .mapping import load_mapping
from .tempo import TempoMap, TimeSignatureMap
from .timeline import FrameGrid, FramePosition, Timeline, parse_fps

__all__ = ["BounceSpec", "BouncePlan", "BounceSummary", "plan_bounce", "run_bounce", "parse_position", "BounceError"]

_RENDER_KEYS = {"prompts", "prompt", "negative_prompt", "seed", "steps", "guidance", "size", "width", "height", "fps", "tempo",
                "time_signature", "batch"}


class BounceError(PlanError):
    pass


@dataclass
class BounceSpec:
    audio: Path
    config: Path
    out: Path
    midi: Path | None = None
    rpp: Path | None = None
    lanes: list[Path] = field(default_factory=list)
    fps: str | None = None
    start: str | None = None
    end: str | None = None
    size: int | None = None
    steps: int | None = None
    seed: int | None = None
    batch: int | None = None
    frames: Path | None = None
    model: Path | None = None
    # render on a running `bendbridge serve` instead of in-process
    server: str | None = None
    server_keys: Path | None = None
    server_client: str = "client"  # key name in server_keys
    server_timeout: float = 300.0
    # a session recorded from a plugin brings its own tempo map, meter and lanes
    tempo: TempoMap | None = None
    meter: TimeSignatureMap | None = None
    extra_lanes: dict[str, AutomationLane] = field(default_factory=dict)


@dataclass
class BouncePlan:
    timeline: Timeline
    positions: list[FramePosition]
    params: list[dict[str, dict[str, float]]]
    render: dict[str, Any]
    plan: BendPlan
    start: Fraction
    end: Fraction  # start + n/fps: the end of the last frame
    audio_path: Path


@dataclass
class BounceSummary:
    frames: int
    rendered: int
    resumed: int
    seconds: float
    nan_frames: list[int]
    black_frames: list[int]
    video: Path
    manifest: Path

    def __str__(self) -> str:
        fps = self.rendered / self.seconds if self.seconds > 0 else 0.0
        s = (f"bounced {self.frames} frames ({self.rendered} rendered, {self.resumed} resumed) in {self.seconds:.1f} s "
             f"({fps:.2f} frames/s) → {self.video}")
        if self.nan_frames or self.black_frames:
            s += f"\n  NaN frames: {self.nan_frames or 'none'}; black frames: {self.black_frames or 'none'}"
        return s


def parse_position(text: str, timeline: Timeline, what: str) -> Fraction:
    """'12.5' (seconds) or 'BAR:BEAT[:TICK]' (1-based) → seconds on the timeline."""
    t = text.strip()
    m = re.fullmatch(r"(\d+):(\d+(?:\.\d+)?)(?::(\d+))?", t)
    try:
        if m:
            return timeline.tempo.seconds_at(timeline.meter.beats_of(int(m[1]), Fraction(m[2]), int(m[3] or 0)))
        v = Fraction(t)
    except (ValueError, ZeroDivisionError):
        raise BounceError(what, f"{text!r}: expected seconds (e.g. 12.5) or bar:beat (e.g. 5:1)") from None
    if v < 0:
        raise BounceError(what, f"{text!r} is before the start of the song")
    return v


def _load_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BounceError(str(path), "no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise BounceError(str(path), f"not valid TOML: {e}") from None


def plan_bounce(spec: BounceSpec) -> BouncePlan:
    """Everything but the rendering: timeline, range, features, lanes, per-frame parameters."""
    cfg = _load_config(spec.config)
    render = dict(cfg.get("render", {}))
    bad = set(render) - _RENDER_KEYS
    if bad:
        raise BounceError(f"render.{sorted(bad)[0]}", f"unknown field; valid: {', '.join(sorted(_RENDER_KEYS))}")
    plan = BendPlan.from_dict({"bend": cfg.get("bend", [])})
    lanes: dict[str, AutomationLane] = {}
    tempo, meter = TempoMap.constant(render.get("tempo", 120)), TimeSignatureMap()
    if spec.midi and spec.rpp:
        raise BounceError("--midi", "give either --midi or --rpp as the tempo source, not both")
    if spec.midi:
        from .midifile import read_midi

        ms = read_midi(spec.midi)
        tempo, meter = ms.tempo, ms.meter
        lanes.update(ms.lanes)
    if spec.rpp:
        from .rpp import read_rpp

        rp = read_rpp(spec.rpp)
        tempo, meter = rp.tempo, rp.meter
        lanes.update(rp.lanes)
    for lp in spec.lanes:
        lanes.update({ln.name: ln for ln in load_lanes(lp)})
    if spec.tempo is not None:
        tempo = spec.tempo
    if spec.meter is not None:
        meter = spec.meter
    lanes.update(spec.extra_lanes)
    mapping = load_mapping(cfg, plan, set(lanes))
    fps = parse_fps(spec.fps or str(render.get("fps", "24")))
    audio_mono = load_audio(spec.audio, FeatureConfig().rate)
    duration = Fraction(len(audio_mono), FeatureConfig().rate)
    probe = Timeline(FrameGrid(fps, 48_000), tempo, meter)
    start = parse_position(spec.start, probe, "--start") if spec.start else Fraction(0)
    end = parse_position(spec.end, probe, "--end") if spec.end else duration
    if end > duration:
        raise BounceError("--end", f"{float(end):.3f} s is past the end of the audio ({float(duration):.3f} s)")
    if end <= start:
        raise BounceError("--end", f"the range is empty: end {float(end):.3f} s ≤ start {float(start):.3f} s")
    tl = Timeline(FrameGrid(fps, 48_000, start), tempo, meter)
    n = tl.grid.count(end)
    positions = [tl.position(i) for i in range(n)]
    fcfg = FeatureConfig(window=float(cfg.get("features", {}).get("window", 0.05)))
    need = mapping.needs_features()
    feats: dict[str, np.ndarray] = {}
    if need:
        raw = extract_features(audio_mono, [p.seconds for p in positions], fcfg)
        for k in need:
            v = smooth(raw[k], mapping.smoothing[k], float(fps)) if k in mapping.smoothing else raw[k]
            feats[k] = normalise(v)
    params = mapping.resolve(positions, tl, feats, lanes)
    return BouncePlan(tl, positions, params, render, plan, start, start + Fraction(n) / fps, Path(spec.audio))


def _frame_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _fingerprint(setup: dict[str, Any], pos: FramePosition, params: dict[str, Any]) -> str:
    blob = json.dumps({"setup": setup, "t": str(pos.seconds), "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _session_name(out: Path, setup: dict[str, Any]) -> str:
    """The server-side folder of a bounce: readable, and distinct per video and setup."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", out.stem).strip("-")[:48] or "bounce"
    return f"bounce-{stem}-{hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:10]}"


def _backend(spec: BounceSpec, bp: BouncePlan, prompts: list[str], pipe: Any):
    from bendbridge.server.render import RenderConfig

    from ._bounce_backends import LocalFrames, RemoteFrames

    r = bp.render
    size = spec.size or r.get("size")
    seed = spec.seed if spec.seed is not None else int(r.get("seed", 0))
    width, height = size or r.get("width"), size or r.get("height")
    steps, guidance = spec.steps or r.get("steps"), r.get("guidance")
    if spec.server:
        from bendbridge.protocol import SessionSetup

        if spec.model is not None or pipe is not None:
            raise BounceError("--model", "a bounce through --server renders with the server's model (bendbridge serve --model DIR)")
        fps = bp.timeline.grid.fps
        base = dict(prompts=tuple(prompts), negative_prompt=r.get("negative_prompt", ""), seed=seed, width=width, height=height,
                    steps=steps, guidance=None if guidance is None else float(guidance), fps_num=fps.numerator,
                    fps_den=fps.denominator, plan=bp.plan.to_dict(), mode="offline", deliver="png")
        setup = SessionSetup(output=_session_name(Path(spec.out), base), **base)
        return RemoteFrames(spec.server, setup, keys=spec.server_keys, client=spec.server_client, timeout=spec.server_timeout)
    if pipe is None:
        from bendbridge.server.model import load_pipeline

        pipe = load_pipeline(spec.model)
    rc = RenderConfig(prompts=tuple(prompts), negative_prompt=r.get("negative_prompt", ""), seed=seed, width=width, height=height,
                      steps=steps, guidance=guidance, plan=bp.plan, max_batch=spec.batch or int(r.get("batch", 8)))
    return LocalFrames(pipe, rc)


def run_bounce(spec: BounceSpec, pipe: Any = None, progress: bool = True) -> BounceSummary:
    """Plan, render the missing frames (in-process, or on ``spec.server``), encode the video with the
    song's range, write the manifest."""
    from tqdm import tqdm

    from bendbridge.server.net.output import OutputStore
    from bendbridge.server.video import write_video

    from ._bounce_backends import BackendError
    from .features import FeatureError

    t0 = time.perf_counter()
    bp = plan_bounce(spec)
    r = bp.render
    prompts = r.get("prompts") or ([r["prompt"]] if "prompt" in r else None)
    if not prompts:
        raise BounceError("render.prompts", "the config needs [render] prompts = [\"…\"]")
    try:
        backend = _backend(spec, bp, list(prompts), pipe)
    except BackendError as e:
        raise BounceError(e.field, str(e)) from None
    setup = backend.setup
    seed = setup["seed"]
    out = Path(spec.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(spec.frames) if spec.frames else out.parent / f".{out.stem}.bounce"
    store = OutputStore(work.parent, work.name)
    todo, fps_ = [], [_fingerprint(setup, p, pp) for p, pp in zip(bp.positions, bp.params)]
    for p, fp in zip(bp.positions, fps_):
        if store.finished(p.frame, fp) is None:
            todo.append(p.frame)
    resumed = len(bp.positions) - len(todo)
    nan_frames, black_frames = [], []
    bar = tqdm(total=len(bp.positions), initial=resumed, unit="frame", desc="bounce", disable=not progress, smoothing=0.1)
    try:
        for got in backend.render(todo, bp.positions, bp.params):
            i = got.frame
            p = bp.positions[i]
            if got.status == "nan":
                nan_frames.append(i)
            elif got.status == "black":
                black_frames.append(i)
            store.write_png(got.png, dict(frame=i, sample=p.sample, seconds=float(p.seconds), beats=float(p.beats),
                                          bar=p.bar_beat.bar, beat=float(p.bar_beat.beat), params=bp.params[i], seed=seed,
                                          fingerprint=fps_[i], status=got.status, time=str(p.seconds), bar_beat=str(p.bar_beat)))
            bar.update(1)
    except BackendError as e:
        raise BounceError(e.field, str(e)) from None
    finally:
        bar.close()
        backend.close()
    width, height = _frame_size(store.path(0))
    # audio: exactly [start, start + n/fps) at the file's own rate
    from pedalboard.io import AudioFile

    try:
        with AudioFile(str(bp.audio_path)) as f:
            rate = int(f.samplerate)
            a0 = math.floor(bp.start * rate + Fraction(1, 2))
            a1 = math.floor(bp.end * rate + Fraction(1, 2))
            f.seek(min(a0, f.frames))
            audio = f.read(max(0, min(a1, f.frames) - a0))
    except Exception as e:  # noqa: BLE001
        raise FeatureError(f"{bp.audio_path}: cannot read audio ({e})") from None
    if audio.shape[1] < a1 - a0:  # the last frame runs past the song: pad with silence
        audio = np.concatenate([audio, np.zeros((audio.shape[0], a1 - a0 - audio.shape[1]), audio.dtype)], axis=1)

    def frames():
        from PIL import Image

        for i in range(len(bp.positions)):
            yield np.asarray(Image.open(store.path(i)).convert("RGB"))

    write_video(out, frames(), bp.timeline.grid.fps, (width, height), audio, rate)
    manifest = out.with_suffix(".manifest.jsonl")
    lines = [store.done[i].to_json() for i in range(len(bp.positions))]
    manifest.write_text("\n".join(lines) + "\n")
    if spec.frames is None:
        shutil.rmtree(work, ignore_errors=True)
    return BounceSummary(len(bp.positions), len(todo), resumed, time.perf_counter() - t0, nan_frames, black_frames, out, manifest)
