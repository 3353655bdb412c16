"""Audio features evaluated on a window centred on each frame's exact time.

Audio comes from any file pedalboard reads (mixed to mono, resampled to the analysis rate) or
from live blocks. For frame times t_i the window is centred on sample round(t_i · rate) (exact:
times are Fractions), Hann-weighted for the spectrum, ``window`` seconds long (default 50 ms).

Features (per frame): ``rms``, ``peak``, ``centroid`` (Hz), ``spread`` (Hz), ``flux`` (mean |ΔM|
against the window half a window earlier), ``onset`` (rectified log-spectral flux), and band
energies ``low`` (20-250 Hz), ``mid`` (250-2000 Hz), ``high`` (2-8 kHz).
Smoothing (median filter → envelope follower → noise gate) and min-max normalisation over the song
follow the journal version of Dzwonczyk, Cella and Ban's network-bending paper (JAES 2025), with
times in seconds so that they do not depend on the frame rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from bendbridge.protocol.errors import BendbridgeError

__all__ = [
    "FEATURES",
    "FeatureConfig",
    "Smoothing",
    "load_audio",
    "extract_features",
    "smooth",
    "normalise",
    "FeatureError",
]

FEATURES = ("rms", "peak", "centroid", "spread", "flux", "onset", "low", "mid", "high")


class FeatureError(BendbridgeError):
    """An audio file that cannot be read."""


@dataclass(frozen=True)
class FeatureConfig:
    window: float = 0.05  # seconds
    rate: int = 22_050  # analysis sample rate
    bands: tuple[tuple[float, float], ...] = ((20.0, 250.0), (250.0, 2000.0), (2000.0, 8000.0))
    chunk: int = 2048  # frames per vectorised chunk (bounds memory on long songs)


@dataclass(frozen=True)
class Smoothing:
    """median (s) → envelope follower (attack/release time constants, s; 0 = instant) → gate
    (zero below ``gate`` × range above the minimum)."""

    median: float = 0.0
    attack: float = 0.0
    release: float = 0.0
    gate: float = 0.0


def audio_info(path: str | Path) -> tuple[int, int]:
    """(sample rate in Hz, length in samples) of an audio file, as the file itself says."""
    from pedalboard.io import AudioFile

    p = Path(path)
    if not p.exists():
        raise FeatureError(str(p), "no such audio file")
    try:
        with AudioFile(str(p)) as f:
            return int(f.samplerate), int(f.frames)
    except Exception as e:  # noqa: BLE001 - pedalboard raises plain errors for bad files
        raise FeatureError(str(p), f"cannot read audio ({type(e).__name__}: {e})") from None


def load_audio(path: str | Path, rate: int = 22_050) -> np.ndarray:
    """Mono float32 samples of an audio file at ``rate`` Hz. -> [N]"""
    from pedalboard.io import AudioFile

    p = Path(path)
    if not p.exists():
        raise FeatureError(str(p), "no such audio file")
    try:
        with AudioFile(str(p)) as f:
            src = f.resampled_to(rate) if f.samplerate != rate else f
            data = src.read(src.frames)
    except Exception as e:  # noqa: BLE001 - pedalboard raises plain errors for bad files
        raise FeatureError(str(p), f"cannot read audio ({type(e).__name__}: {e})") from None
    return np.ascontiguousarray(data.mean(axis=0), dtype=np.float32)


def extract_features(
    audio: np.ndarray, times: Sequence[Fraction], analysis: FeatureConfig = FeatureConfig()
) -> dict[str, np.ndarray]:
    """Features at each time in ``times`` (seconds, exact). audio [N] at ``analysis.rate``. -> name -> [F]"""
    rate = analysis.rate
    w = max(16, int(round(analysis.window * rate)))
    half = w // 2
    lag = max(1, w // 2)
    centres = np.array([math.floor(Fraction(t) * rate + Fraction(1, 2)) for t in times], dtype=np.int64)
    pad = w + lag
    x = np.concatenate([np.zeros(pad, np.float32), np.asarray(audio, np.float32), np.zeros(pad, np.float32)])
    hann = np.hanning(w).astype(np.float32)
    freqs = np.fft.rfftfreq(w, 1.0 / rate).astype(np.float32)
    band_idx = [(freqs >= lo) & (freqs < hi) for lo, hi in analysis.bands]
    out = {k: np.empty(len(centres), np.float32) for k in FEATURES}
    offs = np.arange(w, dtype=np.int64)
    for s in range(0, len(centres), analysis.chunk):
        c = centres[s : s + analysis.chunk] + pad - half
        win = x[c[:, None] + offs]  # [F, W]
        prev = x[(c - lag)[:, None] + offs]
        m = np.abs(np.fft.rfft(win * hann, axis=1)).astype(np.float32)
        mp = np.abs(np.fft.rfft(prev * hann, axis=1)).astype(np.float32)
        sl = slice(s, s + len(c))
        out["rms"][sl] = np.sqrt(np.mean(win * win, axis=1))
        out["peak"][sl] = np.max(np.abs(win), axis=1)
        tot = m.sum(axis=1) + 1e-12
        cen = (m * freqs).sum(axis=1) / tot
        out["centroid"][sl] = cen
        out["spread"][sl] = np.sqrt(np.maximum((m * (freqs - cen[:, None]) ** 2).sum(axis=1) / tot, 0))
        out["flux"][sl] = np.mean(np.abs(m - mp), axis=1)
        out["onset"][sl] = np.mean(np.maximum(np.log1p(100 * m) - np.log1p(100 * mp), 0), axis=1)
        p2 = m * m / w
        for name, idx in zip(("low", "mid", "high"), band_idx):
            out[name][sl] = p2[:, idx].sum(axis=1)
    return out


def smooth(v: np.ndarray, s: Smoothing, fps: float) -> np.ndarray:
    """Median filter, then attack/release envelope follower, then noise gate. v [F] -> [F]"""
    y = np.asarray(v, np.float64).copy()
    if s.median > 0:
        from scipy.ndimage import median_filter

        k = max(1, int(round(s.median * fps)) | 1)
        y = median_filter(y, size=k, mode="nearest")
    if s.attack > 0 or s.release > 0:
        a_up = math.exp(-1.0 / (s.attack * fps)) if s.attack > 0 else 0.0
        a_dn = math.exp(-1.0 / (s.release * fps)) if s.release > 0 else 0.0
        out = np.empty_like(y)
        prev = y[0] if len(y) else 0.0
        for i, xi in enumerate(y):  # a recursive filter: inherently sequential, F is small
            a = a_up if xi > prev else a_dn
            prev = a * prev + (1 - a) * xi
            out[i] = prev
        y = out
    if s.gate > 0 and len(y):
        lo, hi = float(y.min()), float(y.max())
        y = np.where(y < lo + s.gate * (hi - lo), 0.0, y)
    return y


def normalise(v: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max to [0, 1]: over the whole array (offline) or a fixed/calibrated range (live)."""
    y = np.asarray(v, np.float64)
    lo = float(y.min()) if lo is None else lo
    hi = float(y.max()) if hi is None else hi
    if hi <= lo:
        return np.zeros_like(y)
    return np.clip((y - lo) / (hi - lo), 0.0, 1.0)
