"""Video files with PyAV: H.264 + AAC in MP4 (default) or ProRes + PCM in MOV (for editors).

Frame i gets pts i in a time base of 1/fps exactly (fps rational, e.g. 30000/1001), so it is
shown at i/fps after the start. The audio is cut to exactly the bounced range: samples
[round(start·rate), round(end·rate)) where end = start + n/fps, so video and audio durations
differ by less than one sample plus the codec's frame padding (well under one video frame).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["VIDEO_FORMATS", "VideoError", "check_video_path", "read_audio_span", "write_video"]


class VideoError(BendbridgeError):
    """A video file bendbridge cannot write."""


@dataclass(frozen=True)
class VideoFormat:
    container: str
    video_codec: str
    audio_codec: str
    description: str


VIDEO_FORMATS = {
    ".mp4": VideoFormat("mp4", "libx264", "aac", "H.264 + AAC"),
    ".mov": VideoFormat("mov", "prores_ks", "pcm_s16le", "ProRes + PCM, for editors"),
}


def check_video_path(path: Path, where: str = "--out") -> VideoFormat:
    """The format of a video file name; a name bendbridge cannot write is refused, naming the formats it writes."""
    fmt = VIDEO_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        formats = ", ".join(f"{ext} ({f.description})" for ext, f in VIDEO_FORMATS.items())
        raise VideoError(where, f"cannot write {Path(path).name!r}: bendbridge writes {formats}")
    return fmt


def read_audio_span(path: Path, start: Fraction, end: Fraction) -> tuple[np.ndarray, int]:
    """Samples [round(start·rate), round(end·rate)) of an audio file at its own rate, padded with
    silence past its end. -> (float32 [C, N], rate)"""
    from pedalboard.io import AudioFile

    try:
        with AudioFile(str(path)) as f:
            rate = int(f.samplerate)
            a0 = math.floor(start * rate + Fraction(1, 2))
            a1 = math.floor(end * rate + Fraction(1, 2))
            f.seek(min(a0, f.frames))
            audio = f.read(max(0, min(a1, f.frames) - a0))
    except Exception as e:  # noqa: BLE001 - pedalboard raises plain errors for unreadable files
        raise VideoError(str(path), f"cannot read audio ({type(e).__name__}: {e})") from None
    if audio.shape[1] < a1 - a0:  # the last frame runs past the song
        audio = np.concatenate([audio, np.zeros((audio.shape[0], a1 - a0 - audio.shape[1]), audio.dtype)], axis=1)
    return audio, rate


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: Fraction,
    size: tuple[int, int],
    audio: np.ndarray | None = None,
    audio_rate: int = 48_000,
    crf: int = 18,
) -> None:
    """Encode ``frames`` (uint8 [H, W, 3]) at ``fps`` with optional ``audio`` (float32 [C, N]).

    The file is written to a temporary name and renamed when complete.
    """
    import av

    path = Path(path)
    video_format = check_video_path(path)
    fmt, vcodec, acodec = video_format.container, video_format.video_codec, video_format.audio_codec
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    w, h = size
    with av.open(str(tmp), mode="w", format=fmt) as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = w, h
        tb = Fraction(fps.denominator, fps.numerator)  # fixed: the muxer may change vs.time_base later
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if vcodec == "libx264":
            vs.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
            vs.options = {"crf": str(crf), "preset": "medium"}
        else:
            vs.pix_fmt = "yuv422p10le"
        astream = None
        if audio is not None:
            astream = out.add_stream(acodec, rate=audio_rate)
            astream.layout = "stereo" if audio.shape[0] >= 2 else "mono"
            if acodec == "aac":
                astream.bit_rate = 192_000
        feed = _AudioFeed(out, astream, audio, audio_rate) if astream is not None else None
        for i, img in enumerate(frames):
            if img.shape[:2] != (h, w):
                raise VideoError(f"frame {i}", f"{img.shape[1]}x{img.shape[0]} pixels, expected {w}x{h}")
            if feed is not None:  # interleave: audio up to the end of this frame first
                feed.until(Fraction(i + 1) / fps)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            vf.time_base = tb
            for pkt in vs.encode(vf):
                out.mux(pkt)
        if feed is not None:
            feed.until(None)
        for pkt in vs.encode():
            out.mux(pkt)
    tmp.replace(path)


class _AudioFeed:
    """Encodes the audio track in codec-sized blocks, on demand up to a given time."""

    def __init__(self, out, stream, audio: np.ndarray, rate: int):
        import av

        self.out, self.stream, self.rate = out, stream, rate
        self.chans = 2 if audio.shape[0] >= 2 else 1
        self.data = np.ascontiguousarray(audio[: self.chans], dtype=np.float32)
        self.layout = "stereo" if self.chans == 2 else "mono"
        aac = stream.codec_context.name == "aac"
        self.block = 1024
        self.resampler = None if aac else av.AudioResampler(format="s16p", layout=self.layout, rate=rate)
        self.pos = 0

    def until(self, t: Fraction | None) -> None:
        import av

        stop = self.data.shape[1] if t is None else min(self.data.shape[1], int(t * self.rate))
        while self.pos < stop and (t is None or self.pos + self.block <= stop or stop == self.data.shape[1]):
            chunk = self.data[:, self.pos : self.pos + self.block]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=self.layout)
            af.sample_rate = self.rate
            af.pts = self.pos
            af.time_base = Fraction(1, self.rate)
            self.pos += chunk.shape[1]
            for f in self.resampler.resample(af) if self.resampler else [af]:
                for pkt in self.stream.encode(f):
                    self.out.mux(pkt)
        if t is None:
            for pkt in self.stream.encode():
                self.out.mux(pkt)
