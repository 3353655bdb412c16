"""Offline bounce: a song (+ MIDI / REAPER project / lanes) and a bend config → a video.

Frame count: the bounce covers [start, end) of the timeline; frame i is shown at
start + i/fps, and there are ceil((end − start) · fps) frames — every frame whose time falls
before ``end``. The video therefore lasts n/fps ≥ end − start (less than one frame longer), and
the audio is cut to exactly the same span [start, start + n/fps).

Everything the options and files decide is checked before anything is rendered (a wrong
``--out`` extension is refused before the audio is even read). Frames are rendered in batches,
in this process or on a render server (a :class:`~bendbridge.protocol.frames.FrameSource`), and
written atomically with a JSON-lines manifest into a work folder (``--frames DIR``, or a hidden
``.NAME.bounce`` folder beside the video that is removed after a successful encode). Killed and
started again with the same command, a bounce renders only the frames that are missing and
produces the same video.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.fields import validate_value
from bendbridge.protocol.frames import FrameSource, LocalRendering
from bendbridge.protocol.inversion import InversionSettings
from bendbridge.protocol.output import OutputStore
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.position import FramePosition
from bendbridge.protocol.render import RENDER_FIELDS, RenderSettings
from bendbridge.protocol.values import finite_number

from .config import SessionConfig
from .features import FeatureConfig, audio_info, extract_features, load_audio, normalise, smooth
from .lanes import AutomationLane, load_lanes
from .mapping import MusicMapping, load_mapping
from .tempo import TempoMap, TimeSignatureMap
from .timeline import FrameGrid, Timeline, parse_fps
from .video import check_video_path, read_audio_span, write_video
from .video_in import Footage, Still

__all__ = ["BounceSpec", "BouncePlan", "BounceSummary", "plan_bounce", "run_bounce", "parse_position", "BounceError"]

FEATURE_RATE = FeatureConfig().rate


class BounceError(BendbridgeError):
    """A bounce option or input that is wrong, named as on the command line (``--end``, ``--server``)."""


_FORMAT_OF = {"--midi": ".mid", "--rpp": ".rpp", "--ardour": ".ardour", "--dawproject": ".dawproject", "--als": ".als"}


@dataclass
class BounceSpec:
    """A bounce as the command line gives it; None options come from the config (then defaults)."""

    audio: Path
    config: Path
    out: Path
    midi: Path | None = None
    rpp: Path | None = None
    ardour: Path | None = None
    dawproject: Path | None = None
    als: Path | None = None
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
    notes: list[str] = field(default_factory=list)  # what the caller wants the summary to say
    # start every frame from the footage's picture at its time, DDIM-inverted, instead of from noise
    # render on Ray workers: "ray" (a private local Ray with `workers` workers), "ray://HOST:PORT", "auto"
    cluster: str | None = None
    workers: int = 2
    init_video: Path | None = None
    init_image: Path | None = None  # one picture for every frame
    inversion: InversionSettings = InversionSettings()

    def project_files(self) -> list[tuple[str, Path]]:
        """The tempo sources given, as (option, path): at most one may be."""
        given = (
            ("--midi", self.midi),
            ("--rpp", self.rpp),
            ("--ardour", self.ardour),
            ("--dawproject", self.dawproject),
            ("--als", self.als),
        )
        return [(option, Path(path)) for option, path in given if path is not None]

    def check_video(self) -> None:
        check_video_path(self.out, "--out")

    def check(self) -> None:
        """Refuse, at once, every option that is wrong without reading a file."""
        self.check_video()
        sources = [o for o, v in self.project_files()]
        if len(sources) > 1:
            raise BounceError(sources[1], f"give one tempo source ({', '.join(sources)} were given), not several")
        if self.cluster is not None:
            from .cluster_frames import parse_cluster

            if self.server:
                raise BounceError("--cluster", "give --server or --cluster, not both")
            parse_cluster(self.cluster, self.workers)
        if self.server and self.model is not None:
            raise BounceError(
                "--model", "a bounce through --server renders with the server's model (bendbridge serve --model DIR)"
            )
        for option, value, spec in (
            ("--size", self.size, RENDER_FIELDS["width"]),
            ("--steps", self.steps, RENDER_FIELDS["steps"]),
            ("--seed", self.seed, RENDER_FIELDS["seed"]),
        ):
            if value is not None:
                validate_value(value, spec, option)
        if self.init_video is not None and self.init_image is not None:
            raise BounceError("--init-image", "give --init-video or --init-image, not both")
        if self.init_video is not None or self.init_image is not None:
            self.inversion.check_options(self.steps, BounceError)
        if self.batch is not None:
            finite_number(self.batch, "--batch", 1, 1024, integer=True, error=BounceError)
        finite_number(self.server_timeout, "--server-timeout", 0.0, None, lo_open=True, error=BounceError)
        if self.fps is not None:
            parse_fps(self.fps, "--fps")
        for option, path in (
            ("--audio", self.audio),
            ("--config", self.config),
            ("--init-video", self.init_video),
            ("--init-image", self.init_image),
            *self.project_files(),
            *(("--lanes", p) for p in self.lanes),
        ):
            if path is not None and not Path(path).is_file():
                raise BounceError(option, f"no such file: {path}")


@dataclass
class BouncePlan:
    """Everything a bounce renders, decided before the first frame: timeline, frames, parameters."""

    timeline: Timeline
    positions: list[FramePosition]
    params: list[dict[str, dict[str, float]]]
    settings: RenderSettings
    plan: BendPlan
    batch: int
    start: Fraction
    end: Fraction  # start + n/fps: the end of the last frame
    audio_path: Path
    notes: list[str] = field(default_factory=list)  # what a reader left out or assumed, for the user
    footage: Footage | Still | None = None  # --init-video, --init-image
    footage_frames: list[int] | None = None  # per frame: the footage frame it starts from


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
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        fps = self.rendered / self.seconds if self.seconds > 0 else 0.0
        s = (
            f"bounced {self.frames} frames ({self.rendered} rendered, {self.resumed} resumed) in {self.seconds:.1f} s "
            f"({fps:.2f} frames/s) → {self.video}"
        )
        for note in self.notes:
            s += f"\n  note: {note}"
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


def _tempo_and_lanes(
    spec: BounceSpec, config: SessionConfig, notes: list[str]
) -> tuple[TempoMap, TimeSignatureMap, dict[str, AutomationLane]]:
    """The tempo map, meter and lanes: the config's defaults, then the project file (MIDI, REAPER,
    Ardour, DAWproject or Ableton Live), then plain lane files, then what a plugin recorded."""
    tempo, meter, lanes = config.tempo, config.meter, {}
    for option, path in spec.project_files():
        from .projects import read_project

        project = read_project(path, _FORMAT_OF[option])
        tempo, meter = project.tempo, project.meter
        lanes.update(project.lanes)
        notes.extend(f"{path.name}: {w}" for w in project.warnings)
    for path in spec.lanes:
        lanes.update({lane.name: lane for lane in load_lanes(path)})
    lanes.update(spec.extra_lanes)
    return spec.tempo or tempo, spec.meter or meter, lanes


def _bounce_range(spec: BounceSpec, probe: Timeline, duration: Fraction) -> tuple[Fraction, Fraction]:
    """[start, end) in seconds from --start / --end (seconds or bar:beat), within the audio."""
    start = parse_position(spec.start, probe, "--start") if spec.start else Fraction(0)
    end = parse_position(spec.end, probe, "--end") if spec.end else duration
    if end > duration:
        raise BounceError("--end", f"{float(end):.3f} s is past the end of the audio ({float(duration):.3f} s)")
    if end <= start:
        raise BounceError("--end", f"the range is empty: end {float(end):.3f} s ≤ start {float(start):.3f} s")
    return start, end


def _features(
    audio: np.ndarray, positions: list[FramePosition], mapping: MusicMapping, window: float, fps: Fraction
) -> dict[str, np.ndarray]:
    """The audio features the mapping uses, at every frame's time, smoothed and normalised to [0, 1]."""
    need = mapping.needs_features()
    if not need:
        return {}
    raw = extract_features(audio, [p.seconds for p in positions], FeatureConfig(window=window))
    out = {}
    for name in need:
        values = smooth(raw[name], mapping.smoothing[name], float(fps)) if name in mapping.smoothing else raw[name]
        out[name] = normalise(values)
    return out


def plan_bounce(spec: BounceSpec) -> BouncePlan:
    """Everything but the rendering: timeline, range, features, lanes, per-frame parameters."""
    spec.check()
    config = SessionConfig.load(spec.config)
    settings = config.rendering().override(
        {"seed": "--seed", "steps": "--steps", "width": "--size", "height": "--size"},
        seed=spec.seed,
        steps=spec.steps,
        width=spec.size,
        height=spec.size,
    )
    notes: list[str] = list(spec.notes)
    tempo, meter, lanes = _tempo_and_lanes(spec, config, notes)
    mapping = load_mapping(config.tables, config.plan, set(lanes))
    fps = parse_fps(spec.fps, "--fps") if spec.fps else config.fps
    rate, length = audio_info(spec.audio)  # frame positions are counted in the song's own sample rate
    start, end = _bounce_range(spec, Timeline(FrameGrid(fps, rate), tempo, meter), Fraction(length, rate))
    timeline = Timeline(FrameGrid(fps, rate, start), tempo, meter)
    audio = load_audio(spec.audio, FEATURE_RATE)
    n = timeline.grid.count(end)
    positions = [timeline.position(i) for i in range(n)]
    footage, footage_frames = _footage(spec, settings, positions, notes)
    params = mapping.resolve(
        positions, timeline, _features(audio, positions, mapping, config.feature_window, fps), lanes
    )
    return BouncePlan(
        timeline,
        positions,
        params,
        settings,
        config.plan,
        spec.batch or config.batch,
        start,
        start + Fraction(n) / fps,
        Path(spec.audio),
        notes,
        footage,
        footage_frames,
    )


def _footage(
    spec: BounceSpec, settings: RenderSettings, positions: list[FramePosition], notes: list[str]
) -> tuple[Footage | Still | None, list[int] | None]:
    """The footage of ``--init-video`` (or the still of ``--init-image``) and, per frame, the footage
    frame on screen at its time."""
    if spec.init_video is None and spec.init_image is None:
        return None, None
    spec.inversion.check_options(settings.steps, BounceError)
    footage = Footage(spec.init_video) if spec.init_video is not None else Still(spec.init_image)  # type: ignore[arg-type]
    frames = footage.indices([p.seconds for p in positions])
    last = positions[-1].seconds if positions else Fraction(0)
    if len(footage) > 1 and last > footage.duration + (footage.times[-1] - footage.times[-2]):
        notes.append(
            f"{footage.path.name} ends at {float(footage.duration):.3f} s: frames after it start from its last picture"
        )
    return footage, frames


def _fingerprint(identity: dict[str, Any], pos: FramePosition, params: dict[str, Any], picture: int | None) -> str:
    what = {"setup": identity, "t": str(pos.seconds), "params": params}
    if picture is not None:
        what["picture"] = picture  # the footage frame it starts from
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _session_name(out: Path, setup: dict[str, Any]) -> str:
    """The server-side folder of a bounce: readable, and distinct per video and setup."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", out.stem).strip("-")[:48] or "bounce"
    return f"bounce-{stem}-{hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:10]}"


def _open_source(
    spec: BounceSpec, bp: BouncePlan, local: LocalRendering | None, cluster_worker: type | None = None
) -> FrameSource:
    """The render server's frames (``--server``), else this process's, where the render side is installed."""
    if spec.server:
        from bendbridge.protocol import SessionSetup

        from .remote_frames import RemoteFrames

        fps = bp.timeline.grid.fps
        identity = {**bp.settings.as_dict(), "fps": str(fps), "plan": bp.plan.to_dict()}
        setup = SessionSetup.for_settings(
            bp.settings,
            output=_session_name(Path(spec.out), identity),
            fps=fps,
            plan=bp.plan.to_dict(),
            mode="offline",
            deliver="png",
            inversion=spec.inversion.to_dict() if bp.footage is not None else None,
        )
        return RemoteFrames(
            spec.server,
            setup,
            keys=spec.server_keys,
            client=spec.server_client,
            timeout=spec.server_timeout,
            rate=bp.timeline.grid.rate,
        )
    if spec.cluster is not None:
        from .cluster_frames import ClusterFrames, parse_cluster

        if cluster_worker is None:
            raise BounceError("--cluster", "no render worker class was given for the cluster's actors")
        inversion = spec.inversion if bp.footage is not None else None
        return ClusterFrames(parse_cluster(spec.cluster, spec.workers), bp.settings, bp.plan, bp.batch,
                             Path(spec.model) if spec.model else None, inversion, worker=cluster_worker)  # fmt: skip
    if local is None:
        raise BounceError(
            "--server",
            "this installation renders only on a render server: give --server URL, "
            "or install the render side with pip install 'bendbridge[server]'",
        )
    if bp.footage is not None:
        return local(bp.settings, bp.plan, bp.batch, spec.inversion)
    return local(bp.settings, bp.plan, bp.batch)


def _render_missing(
    bp: BouncePlan, source: FrameSource, store: OutputStore, todo: list[int], fingerprints: list[str], progress: bool
) -> tuple[list[int], list[int]]:
    """Render the frames ``todo`` into ``store`` as they come; returns the NaN and the black frames."""
    from tqdm import tqdm

    nan_frames, black_frames = [], []
    bar = tqdm(
        total=len(bp.positions),
        initial=len(bp.positions) - len(todo),
        unit="frame",
        desc="bounce",
        disable=not progress,
        smoothing=0.1,
    )
    footage, footage_frames = bp.footage, bp.footage_frames
    pictures = None
    if footage is not None and footage_frames is not None:
        pictures = lambda i: footage.picture(footage_frames[i])  # noqa: E731 (decoded in frame order)
    try:
        for got in source.render(todo, bp.positions, bp.params, pictures):
            i, p = got.frame, bp.positions[got.frame]
            if got.status == "nan":
                nan_frames.append(i)
            elif got.status == "black":
                black_frames.append(i)
            store.write_png(
                got.png,
                dict(
                    **p.wire(),
                    params=bp.params[i],
                    seed=bp.settings.seed,
                    fingerprint=fingerprints[i],
                    status=got.status,
                    time=str(p.seconds),
                    bar_beat=str(p.bar_beat),
                    picture=footage_frames[i] if footage_frames is not None else None,
                ),
            )
            bar.update(1)
    finally:
        bar.close()
    return nan_frames, black_frames


def _encode(out: Path, bp: BouncePlan, store: OutputStore) -> Path:
    """The video from the work folder's frames with the song's span [start, end); then the manifest."""
    from PIL import Image

    audio, rate = read_audio_span(bp.audio_path, bp.start, bp.end)
    with Image.open(store.path(0)) as first:
        size = first.size

    def frames():
        for i in range(len(bp.positions)):
            with Image.open(store.path(i)) as im:
                yield np.asarray(im.convert("RGB"))

    write_video(out, frames(), bp.timeline.grid.fps, size, audio, rate)
    manifest = out.with_suffix(".manifest.jsonl")
    manifest.write_text("\n".join(store.done[i].to_json() for i in range(len(bp.positions))) + "\n")
    return manifest


def run_bounce(
    spec: BounceSpec, local: LocalRendering | None = None, progress: bool = True, cluster_worker: type | None = None
) -> BounceSummary:
    """Plan, render the missing frames (on ``spec.server``, on Ray actors of ``cluster_worker`` with
    ``spec.cluster``, else in this process through ``local``), encode the video with the song's
    range, write the manifest."""
    t0 = time.perf_counter()
    bp = plan_bounce(spec)
    out = Path(spec.out)
    work = Path(spec.frames) if spec.frames else out.parent / f".{out.stem}.bounce"
    store = OutputStore(work.parent, work.name)
    source = _open_source(spec, bp, local, cluster_worker)
    try:
        identity = source.identity
        if bp.footage is not None:
            identity = {**identity, "footage": bp.footage.digest(), "inversion": spec.inversion.to_dict()}
        pictures = bp.footage_frames or [None] * len(bp.positions)
        fingerprints = [
            _fingerprint(identity, p, pp, k) for p, pp, k in zip(bp.positions, bp.params, pictures, strict=True)
        ]
        todo = [p.frame for p, fp in zip(bp.positions, fingerprints) if store.finished(p.frame, fp) is None]
        nan_frames, black_frames = _render_missing(bp, source, store, todo, fingerprints, progress)
    finally:
        source.close()
    manifest = _encode(out, bp, store)
    if spec.frames is None:
        shutil.rmtree(work, ignore_errors=True)
    resumed = len(bp.positions) - len(todo)
    seconds = time.perf_counter() - t0
    frames = len(bp.positions)
    return BounceSummary(frames, len(todo), resumed, seconds, nan_frames, black_frames, out, manifest, bp.notes)
