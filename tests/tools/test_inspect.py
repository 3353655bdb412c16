"""``bendbridge inspect``: what bendbridge read from a project file, as a person sees it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bendbridge.tools.cli import main

REAL = Path(__file__).parents[1] / "data" / "realworld"


def test_inspect_prints_tempo_meters_lanes_and_warnings_of_a_midi_file(capsys):
    assert main(["inspect", str(REAL / "midi" / "made" / "lilypond_pickup.mid")]) == 0
    out = capsys.readouterr().out
    assert "Standard MIDI File" in out and "tempo map (3):" in out
    assert "0:05.833     4:1:000    108.000  step" in out  # 72 BPM for 7 beats, then 108 at bar 4
    assert "bar 4     5/4   from quarter note 7  (the bar before it is cut short)" in out
    assert "cc:1:64: 4 point(s) in beats" in out and "does not fall on a bar line of 3/4" in out


def test_inspect_lists_the_first_tempo_changes_unless_asked_for_all(capsys):
    path = str(REAL / "midi" / "tonejs_debussy_passepied.mid")
    main(["inspect", path])
    assert "… 824 more (--all lists every one)" in capsys.readouterr().out
    main(["inspect", path, "--all"])
    assert "more (--all" not in capsys.readouterr().out


def test_inspect_reads_a_reaper_project_and_names_its_warnings(capsys):
    assert main(["inspect", str(REAL / "rpp" / "exvertus_test_track.rpp")]) == 0
    out = capsys.readouterr().out
    assert "REAPER project" in out and "master/volume: 4 point(s) in seconds" in out and "VOLTYPE 1" in out


def test_inspect_plots_tempo_and_the_chosen_lanes(tmp_path, capsys):
    png = tmp_path / "fig" / "bartok.png"
    path = str(REAL / "midi" / "tonejs_bartok_concerto_for_orchestra_1.mid")
    assert main(["inspect", path, "--plot", str(png), "--lanes", "cc:1:2", "cc:1:7"]) == 0
    assert "tempo and 2 lane(s)" in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.width > 800 and im.height > 400


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("song.txt", "suffix '.txt' is not a format bendbridge reads; allowed: .als, .ardour, .dawproject"),
        ("gone.mid", "gone.mid: no such file"),
    ],
)
def test_inspect_refuses_what_it_cannot_read_in_one_line(tmp_path, capsys, name, says):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("hello")
    assert main(["inspect", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_inspect_names_a_lane_pattern_that_matches_nothing(tmp_path, capsys):
    path = str(REAL / "midi" / "made" / "lilypond_pickup.mid")
    assert main(["inspect", path, "--plot", str(tmp_path / "x.png"), "--lanes", "volume*"]) == 2
    assert "--lanes: no lane matches volume*; lanes: cc:1:64" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
