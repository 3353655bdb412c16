"""What bendbridge understood of a project file, for people: a text report and a figure.

:func:`describe` lists the tempo map (every change with its second, bar:beat and BPM), the meters
(with the bar each starts), the lanes (domain, point count, range, first and last position, shapes)
and the warnings. :func:`plot` draws the tempo and each lane over the bar axis.
"""

from __future__ import annotations

import fnmatch
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane
from .projects import ProjectFile
from .shapes import SHAPES

__all__ = ["describe", "plot", "pyplot", "select_lanes"]


def _clock(seconds: Fraction) -> str:
    m, s = divmod(float(seconds), 60)
    return f"{int(m)}:{s:06.3f}"


def _lane_beats(project: ProjectFile, lane: AutomationLane, t: Fraction) -> Fraction:
    return t if lane.domain == "beats" else project.tempo.beats_at(t)


def describe(project: ProjectFile, every: bool = False, limit: int = 24) -> str:
    """The report; ``every`` lists all tempo changes and lanes, else the first ``limit`` of each."""
    tempo, meter = project.tempo, project.meter
    end = project.end_seconds()
    bpms = [p.bpm for p in tempo.points]
    lines = [
        f"{project.path}: {project.kind}",
        f"length {_clock(end)} to bar {meter.bar_beat(tempo.beats_at(end))}; "
        f"tempo {float(min(bpms)):g}–{float(max(bpms)):g} BPM in {len(bpms)} change(s)",
        "",
        f"tempo map ({len(bpms)}):",
        f"  {'time':>10}  {'bar:beat':>10}  {'BPM':>9}  to next",
    ]
    shown = tempo.points if every else tempo.points[:limit]
    for p in shown:
        bb = meter.bar_beat(tempo.beats_at(p.seconds))
        lines.append(f"  {_clock(p.seconds):>10}  {str(bb):>10}  {float(p.bpm):9.3f}  {'ramp' if p.ramp else 'step'}")
    if len(shown) < len(tempo.points):
        lines.append(f"  … {len(tempo.points) - len(shown)} more (--all lists every one)")
    lines += ["", f"meters ({len(meter.sigs)}):"]
    for beat, sig in meter.changes():
        cut = "  (the bar before it is cut short)" if sig.start is not None else ""
        lines.append(f"  bar {sig.bar:<5} {sig.num}/{sig.den:<3} from quarter note {float(beat):g}{cut}")
    lines += ["", f"lanes ({len(project.lanes)}):"]
    names = sorted(project.lanes)
    for name in names if every else names[:limit]:
        lines.append("  " + _lane_line(project, project.lanes[name]))
    if not every and len(names) > limit:
        lines.append(f"  … {len(names) - limit} more (--all lists every one)")
    lines += ["", f"warnings ({len(project.warnings)}):"] + [f"  - {w}" for w in project.warnings]
    return "\n".join(lines)


def _lane_line(project: ProjectFile, lane: AutomationLane) -> str:
    first, last = lane.points[0].time, lane.points[-1].time
    at = [project.meter.bar_beat(_lane_beats(project, lane, t)) for t in (first, last)]
    values = [p.value for p in lane.points]
    shapes = ",".join(sorted({SHAPES[p.shape] for p in lane.points}))
    return (
        f"{lane.name}: {len(lane.points)} point(s) in {lane.domain}, values {min(values):g}–{max(values):g} "
        f"of [{lane.lo:g}, {lane.hi:g}], {at[0]} to {at[1]}, {shapes}"
    )


def select_lanes(project: ProjectFile, patterns: list[str] | None) -> list[AutomationLane]:
    """Lanes whose names match any of the shell-style ``patterns`` (all lanes when none given)."""
    names = sorted(project.lanes)
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
        if not names:
            raise BendbridgeError(
                "--lanes", f"no lane matches {', '.join(patterns)}; lanes: {', '.join(sorted(project.lanes)[:12])}"
            )
    return [project.lanes[n] for n in names]


def pyplot(where: str):
    """matplotlib's pyplot on the Agg backend, or the one-line error naming ``where`` and the extra
    to install; call it before long work."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BendbridgeError(where, "needs matplotlib: pip install 'bendbridge[plot]'") from None
    return plt


def plot(project: ProjectFile, out: Path, lanes: list[AutomationLane], samples: int = 1500) -> Path:
    """Tempo and each lane over the bar axis, one row each, written as a PNG to ``out``."""
    plt = pyplot("--plot")
    import numpy as np

    end_beats = max(project.tempo.beats_at(project.end_seconds()), Fraction(4))
    beats = np.linspace(0.0, float(end_beats), samples)
    fig, axes = plt.subplots(1 + len(lanes), 1, sharex=True, figsize=(11, 2.0 + 1.3 * (1 + len(lanes))), squeeze=False)
    tempo_ax = axes[0][0]
    bpm = [float(project.tempo.bpm_at(project.tempo.seconds_at(Fraction(b)))) for b in beats]
    tempo_ax.plot(beats, bpm, color="tab:red", lw=1.2, drawstyle="steps-post")
    tempo_ax.set_ylabel("tempo (BPM)")
    tempo_ax.set_title(f"{project.path.name}: {project.kind}")
    for row, lane in enumerate(lanes, start=1):
        ax = axes[row][0]
        ys = [_value(project, lane, Fraction(b)) for b in beats]
        held = all(p.shape == 1 for p in lane.points)  # MIDI controllers and steps: draw them as steps
        ax.plot(beats, ys, lw=1.1, drawstyle="steps-post" if held else "default")
        ax.set_ylim(lane.lo - 0.05 * (lane.hi - lane.lo), lane.hi + 0.05 * (lane.hi - lane.lo))
        ax.set_ylabel(lane.name if len(lane.name) <= 18 else "…" + lane.name[-17:], fontsize=8)
    _bar_ticks(project, axes[-1][0], float(end_beats))
    axes[-1][0].set_xlabel("bar (bendbridge's bar:beat, from the file's meters)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _value(project: ProjectFile, lane: AutomationLane, beats: Fraction) -> float:
    """A lane's value at a quarter-note position, NaN before its first point (nothing drawn)."""
    t = beats if lane.domain == "beats" else project.tempo.seconds_at(beats)
    return float("nan") if t < lane.points[0].time else lane.value_at(t)


def _bar_ticks(project: ProjectFile, ax, end_beats: float) -> None:
    bars, bar = [], 1
    while (b := float(project.meter.beats_of(bar))) <= end_beats:
        bars.append((b, bar))
        bar += 1
    step = max(1, len(bars) // 16)
    ax.set_xticks([b for b, _ in bars[::step]], [str(n) for _, n in bars[::step]])
    ax.set_xlim(0, end_beats)
