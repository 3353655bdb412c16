"""The bundled demo: a short song synthesised here (numpy + pedalboard), its MIDI file, a config.

About 21 s, 4/4: bars 1-4 at 100 BPM, bars 5-10 at 128 BPM. Drums (kick on every beat, snare
on 2 and 4, closed hats on eighths), a bass line, and a pad through reverb. The MIDI file holds
the tempo map, the time signature and two CC lanes on channel 1: CC 74 ("brightness", a slow
rise over the song) and CC 1 (mod wheel, up and down once per section). Everything is
deterministic, so the demo video is the same on every machine.
"""

from __future__ import annotations

import importlib.resources
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "write_demo",
    "bundled_config",
    "DEMO_CONFIG",
    "DEMO_FAST_CONFIG",
    "DEMO_STEER_CONFIG",
    "DEMO_ADAPTER_CONFIG",
    "DEMO_FOOTAGE_CONFIG",
    "DEMO_CLIP",
    "write_demo_clip",
    "BARS",
    "TEMPI",
]

RATE = 44_100
BARS = 10
TEMPI = ((1, 100), (5, 128))  # (first bar, BPM)
_ROOTS = (45, 45, 41, 43, 45, 48, 41, 43, 45, 40)  # bass root per bar (MIDI note numbers)
DEMO_CONFIG = "demo.toml"
DEMO_FAST_CONFIG = "demo_fast.toml"  # the same bends for the fast model (2 steps)
DEMO_STEER_CONFIG = "demo_steer.toml"  # steering bends (a steering vector, an autoencoder feature)
DEMO_ADAPTER_CONFIG = "demo_adapter.toml"  # a personal adapter whose weight follows a lane
DEMO_FOOTAGE_CONFIG = "demo_footage.toml"  # the demo's bends on footage (guidance 1 for inversion)
DEMO_CLIP = "demo_clip.mp4"  # the bundled footage: a sun rising over a purple sea (tools/make_demo_clip.py)
DEMO_CLIP_SECONDS = 8


def _bar_starts() -> list[Fraction]:
    """Start time of bars 1..BARS+1 in seconds (exact)."""
    t, out = Fraction(0), []
    for bar in range(1, BARS + 2):
        out.append(t)
        bpm = [b for first, b in TEMPI if first <= bar][-1]
        t += Fraction(4 * 60, bpm)
    return out


def _hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _place(buf: np.ndarray, at: Fraction, sound: np.ndarray) -> None:
    i = int(round(at * RATE))
    n = min(len(sound), len(buf) - i)
    if n > 0:
        buf[i : i + n] += sound[:n]


def synthesize(seed: int = 7) -> np.ndarray:
    """The demo song, float32 stereo [2, N] at 44.1 kHz."""
    from pedalboard import Compressor, HighpassFilter, LowpassFilter, Pedalboard, Reverb

    rng = np.random.default_rng(seed)
    starts = _bar_starts()
    n = int(starts[-1] * RATE) + RATE
    drums, bass, pad = (np.zeros(n, np.float32) for _ in range(3))
    t = np.arange(int(0.4 * RATE)) / RATE
    kick = (np.sin(2 * np.pi * (45 * t + 180 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 9)).astype(np.float32)
    snare = (rng.standard_normal(len(t)) * np.exp(-t * 22) * 0.5).astype(np.float32)
    hat = (rng.standard_normal(int(0.05 * RATE)) * np.exp(-np.arange(int(0.05 * RATE)) / RATE * 90) * 0.25).astype(
        np.float32
    )
    snare = Pedalboard([HighpassFilter(900)])(snare[None], RATE)[0]
    hat = Pedalboard([HighpassFilter(6000)])(hat[None], RATE)[0]
    for bar in range(BARS):
        b0, b1 = starts[bar], starts[bar + 1]
        beat = (b1 - b0) / 4
        for k in range(4):
            _place(drums, b0 + k * beat, kick)
            if k in (1, 3):
                _place(drums, b0 + k * beat, snare)
        for k in range(8):
            _place(drums, b0 + k * beat / 2, hat * (1.0 if k % 2 else 0.6))
        root = _ROOTS[bar]
        for k in range(8):  # eighth-note bass
            dur = float(beat / 2) * 0.9
            tt = np.arange(int(dur * RATE)) / RATE
            note = root + (12 if k in (3, 7) else 0)
            saw = 2 * ((tt * _hz(note)) % 1.0) - 1
            _place(bass, b0 + k * beat / 2, (saw * np.exp(-tt * 4) * 0.35).astype(np.float32))
        dur = float(b1 - b0)
        tt = np.arange(int(dur * RATE)) / RATE
        env = np.minimum(1, tt / 0.8) * np.minimum(1, (dur - tt) / 0.3)
        chord = sum(
            np.sin(2 * np.pi * _hz(root + 24 + iv) * (1 + d) * tt) for iv in (0, 3, 7, 10) for d in (-0.002, 0.002)
        )
        _place(pad, b0, (chord * env * 0.05).astype(np.float32))
    bass = Pedalboard([LowpassFilter(900)])(bass[None], RATE)[0]
    pad_st = Pedalboard([LowpassFilter(2500), Reverb(room_size=0.8, wet_level=0.4)])(np.stack([pad, pad]), RATE)
    mix = np.stack([drums + bass, drums + bass]) + pad_st
    mix = Pedalboard([Compressor(threshold_db=-12, ratio=3)])(mix.astype(np.float32), RATE)
    mix = mix[:, : int(starts[-1] * RATE)]
    return (mix / (np.abs(mix).max() + 1e-9) * 0.89).astype(np.float32)


def write_midi(path: Path, ppq: int = 480) -> None:
    import mido

    mid = mido.MidiFile(ticks_per_beat=ppq)
    meta, ctl = mido.MidiTrack(), mido.MidiTrack()
    mid.tracks += [meta, ctl]
    meta.append(mido.MetaMessage("track_name", name="tempo map", time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    last = 0
    for bar, bpm in TEMPI:
        tick = (bar - 1) * 4 * ppq
        meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=tick - last))
        last = tick
    meta.append(mido.MetaMessage("end_of_track", time=BARS * 4 * ppq - last))
    events = []
    total = BARS * 4 * ppq
    for tick in range(0, total + 1, ppq // 2):  # CC 74: slow rise over the song
        events.append((tick, 74, round(127 * tick / total)))
    for tick in range(0, total + 1, ppq // 2):  # CC 1: up and down once per section (bars 1-4, 5-10)
        sec = 16 * ppq if tick < 16 * ppq else 24 * ppq
        x = (tick if tick < 16 * ppq else tick - 16 * ppq) / sec
        events.append((tick, 1, round(127 * (1 - abs(2 * x - 1)))))
    events.sort()
    last = 0
    ctl.append(mido.MetaMessage("track_name", name="automation", time=0))
    for tick, cc, val in events:
        ctl.append(mido.Message("control_change", channel=0, control=cc, value=val, time=tick - last))
        last = tick
    mid.save(path)


def write_demo(folder: Path, config: str = DEMO_CONFIG) -> dict[str, Path]:
    """Write song.wav, song.mid and the demo config (``demo.toml``, or ``demo_fast.toml`` for the
    fast model) into ``folder`` (skipping files already there)."""
    from pedalboard.io import AudioFile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"audio": folder / "song.wav", "midi": folder / "song.mid", "config": folder / config}
    if not paths["audio"].exists():
        song = synthesize()
        tmp = folder / ".song.wav.partial.wav"
        with AudioFile(str(tmp), "w", RATE, 2) as f:
            f.write(song)
        tmp.replace(paths["audio"])
    if not paths["midi"].exists():
        write_midi(paths["midi"])
    if not paths["config"].exists():
        paths["config"].write_text(bundled_config(config), encoding="utf-8")
    return paths


def bundled_config(config: str = DEMO_CONFIG) -> str:
    """A demo bend config as shipped (``write_demo`` keeps an edited copy it finds)."""
    return importlib.resources.files("bendbridge.bridge").joinpath(config).read_text(encoding="utf-8")


def write_demo_clip(folder: Path) -> Path:
    """The bundled footage, copied into ``folder`` (kept if already there)."""
    path = Path(folder) / DEMO_CLIP
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(importlib.resources.files("bendbridge.bridge").joinpath(DEMO_CLIP).read_bytes())
    return path
