"""Real REAPER projects from public repositories (tests/data/realworld/SOURCES.md), read by bendbridge
and checked against an independent reading of the documented format: every ``PT`` line of every
envelope chunk, found here with a few lines of text scanning, must come back as a lane point with its
time, value and shape, evaluate to its value at its time, and move linearly where its shape is 0."""

from __future__ import annotations

import functools
from fractions import Fraction as F
from pathlib import Path

import pytest

from bendbridge.bridge.rpp import read_rpp

CORPUS = Path(__file__).parents[1] / "data" / "realworld" / "rpp"
FILES = sorted(CORPUS.glob("*.rpp")) + sorted(CORPUS.glob("*.RPP"))
_ENVELOPES = ("VOLENV", "VOLENV2", "VOLENV3", "PANENV", "PANENV2", "WIDTHENV", "WIDTHENV2", "MUTEENV", "PARMENV")


@functools.cache
def _envelopes(path: Path) -> list[dict]:
    """Each envelope chunk of the file: its name, first line, ACT flag and PT lines, by scanning text."""
    stack: list[dict] = []
    found = []
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        s = raw.strip()
        if s.startswith("<"):
            stack.append({"name": s[1:].split()[0], "line": n, "act": "1", "points": []})
        elif s == ">":
            chunk = stack.pop()
            if chunk["name"].removeprefix("MASTER") in _ENVELOPES and chunk["points"]:
                found.append(chunk)
        elif stack and s.startswith("ACT "):
            stack[-1]["act"] = s.split()[1]
        elif stack and s.startswith("PT "):
            f = s.split()
            stack[-1]["points"].append((F(f[1]), float(f[2]), int(f[3]) if len(f) > 3 else 0))
    return found


_project = functools.cache(read_rpp)


def test_the_corpus_has_real_projects_of_several_reaper_versions():
    versions = {p.read_text().splitlines()[0].split('"')[1].split("/")[0] for p in FILES if '"' in p.read_text()[:80]}
    assert len(FILES) >= 8 and {"4.32", "5.50c", "6.04", "6.11", "6.69"} <= versions
    assert sum(len(_envelopes(p)) for p in FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_active_envelope_comes_back_point_for_point(path):
    project = _project(path)
    by_points = {tuple((pt.time, pt.value, pt.shape) for pt in lane.points): lane for lane in project.lanes.values()}
    for env in _envelopes(path):
        lane = by_points.get(tuple(env["points"]))
        if env["act"] == "0":
            assert lane is None, f"bypassed envelope on line {env['line']} drives {lane.name}"
            assert any(w.startswith(f"line {env['line']}: ") and "bypassed" in w for w in project.warnings)
            continue
        assert lane is not None, f"envelope on line {env['line']} ({env['name']}) was not read"
        last_at = {t: v for t, v, _ in env["points"]}  # of points at one time, the last is in force
        for t, v in last_at.items():
            assert lane.value_at(t) == pytest.approx(v)
        for (t0, v0, shape), (t1, v1, _) in zip(env["points"], env["points"][1:]):
            if shape == 0 and t1 > t0:
                assert lane.value_at((t0 + t1) / 2) == pytest.approx((v0 + v1) / 2)
            if shape == 1 and t1 > t0:
                assert lane.value_at(t0 + (t1 - t0) * F(99, 100)) == v0


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_tempo_and_meter_are_those_of_the_tempo_line_and_markers(path):
    project = _project(path)
    text = path.read_text().splitlines()
    tempo_line = next(line.split() for line in text if line.strip().startswith("TEMPO "))
    markers = []
    inside = False
    for line in text:
        s = line.strip()
        inside = (inside or s.startswith("<TEMPOENVEX")) and s != ">"
        if inside and s.startswith("PT "):
            markers.append(s.split())
    if not markers or F(markers[0][1]) > 0:
        assert project.tempo.bpm_at(0) == F(tempo_line[1])
    for m in markers:
        if len(m) > 3 and m[3] == "1":
            assert project.tempo.bpm_at(F(m[1])) == F(m[2])
        if len(m) > 4 and int(m[4]) > 0:
            beats = project.tempo.beats_at(F(m[1]))
            sig = project.meter.at_beats(beats)
            assert (sig.num, sig.den) == (int(m[4]) & 0xFFFF, int(m[4]) >> 16)
            assert project.meter.bar_beat(beats).beat == 1
    if not any(len(m) > 4 and int(m[4]) > 0 and F(m[1]) == 0 for m in markers):
        first = project.meter.at_beats(0)
        num, den = (tempo_line + ["4", "4"])[2:4]  # an old project may leave the denominator out: 4
        assert (first.num, first.den) == (int(float(num)), int(float(den)))


def test_tracks_that_share_a_name_keep_their_own_lanes():
    project = _project(CORPUS / "prunotto_film_template.rpp")
    assert "DX A/volume" in project.lanes and "DX A [track 19]/volume" in project.lanes
    assert sum("both named" in w for w in project.warnings) == 12
