"""Feature-extraction speed as a multiple of real time (one core).

Synthesises (or reads ``--audio``) a song, then times, separately: decoding + resampling the
file (pedalboard), and extracting every feature at every frame of a 24 fps grid.

    bendbridge bench features [--audio SONG] [--seconds 180] [--fps 24]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audio", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=180.0, help="length of the synthetic song")
    ap.add_argument("--fps", default="24")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch  # noqa: F401  (keep the measurement to one core, like the rest of the process)
    from pedalboard.io import AudioFile

    from bendbridge.bridge.features import extract_features, load_audio
    from bendbridge.bridge.timeline import parse_fps

    path = args.audio
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="bb-feat-")) / "song.wav"
        rate = 44_100
        t = np.arange(int(args.seconds * rate)) / rate
        rng = np.random.default_rng(0)
        song = 0.3 * np.sin(2 * np.pi * 110 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.05 * rng.standard_normal(len(t))
        with AudioFile(str(path), "w", rate, 2) as f:
            f.write(np.stack([song, song]).astype(np.float32))
    load_times, ext_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        audio = load_audio(path)
        t1 = time.perf_counter()
        dur = len(audio) / 22_050
        fps = parse_fps(args.fps)
        times = [Fraction(i) / fps for i in range(int(dur * fps))]
        t2 = time.perf_counter()
        extract_features(audio, times)
        t3 = time.perf_counter()
        load_times.append(t1 - t0)
        ext_times.append(t3 - t2)
    load, ext = min(load_times), min(ext_times)
    print(f"{dur:.1f} s of audio, {len(times)} frames at {args.fps} fps, 9 features each (best of {args.repeats})")
    print(f"decode + resample:   {load:.3f} s  = {dur / load:8.0f}× real time")
    print(f"feature extraction:  {ext:.3f} s  = {dur / ext:8.0f}× real time  (goal ≥ 500×)")
    print(f"both:                {load + ext:.3f} s  = {dur / (load + ext):8.0f}× real time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
