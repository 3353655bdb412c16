"""A host simulator: plays a song and its MIDI session through a plugin, block by block, as a DAW.

The song is read as float32 at its own sample rate; the MIDI file gives the tempo map, the time
signature and CC lanes, which become parameter automation of the plugin (``param`` = the lane
name, e.g. ``cc:1:74``) delivered as events at their exact sample offsets. Block sizes may be
fixed, a list, or random per block; a block is split where the tempo steps (so every block has
one tempo). Playback can be faster than real time or paced in real time, and can follow a loop
region or a list of seeks.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from bendbridge.bridge.midifile import read_midi
from bendbridge.bridge.tempo import TempoMap, TimeSignatureMap

from .contract import ParameterEvent, Plugin, TransportInfo

__all__ = ["HostSimulator", "BlockSizes"]


@dataclass
class BlockSizes:
    """Fixed (``sizes=[512]``), cycling through a list, or random in [lo, hi] with a seed."""

    sizes: list[int] = field(default_factory=lambda: [512])
    random_range: tuple[int, int] | None = None
    seed: int = 0

    def __iter__(self) -> Iterator[int]:
        if self.random_range:
            rng = random.Random(self.seed)
            while True:
                yield rng.randint(*self.random_range)
        while True:
            yield from self.sizes

    @property
    def max(self) -> int:
        return self.random_range[1] if self.random_range else max(self.sizes)


class HostSimulator:
    def __init__(self, audio: Path, midi: Path | None = None, tempo: float = 120.0):
        from pedalboard.io import AudioFile

        with AudioFile(str(audio)) as f:
            self.rate = int(f.samplerate)
            self.audio = f.read(f.frames).astype(np.float32)  # [C, N]
        if midi is not None:
            ms = read_midi(midi)
            self.tempo, self.meter, self.lanes = ms.tempo, ms.meter, ms.lanes
        else:
            self.tempo, self.meter, self.lanes = TempoMap.constant(tempo), TimeSignatureMap(), {}
        self.length = self.audio.shape[1]
        # tempo steps and automation events at exact sample positions
        self._steps = sorted({self._sample(p.seconds) for p in self.tempo.points if p.seconds > 0})
        self._events: list[tuple[int, str, float]] = []
        for name, lane in self.lanes.items():
            for p in lane.points:
                t = self.tempo.seconds_at(p.time) if lane.domain == "beats" else p.time
                self._events.append((self._sample(t), name, float(p.value)))
        self._events.sort(key=lambda e: e[0])

    def _sample(self, seconds: Fraction) -> int:
        return math.floor(seconds * self.rate + Fraction(1, 2))

    def transport_at(self, sample: int, playing: bool = True, looping: bool = False) -> TransportInfo:
        t = Fraction(sample, self.rate)
        beats = self.tempo.beats_at(t)
        bb = self.meter.bar_beat(beats)
        sig = self.meter.at_beats(beats)
        return TransportInfo(
            sample=sample,
            tempo=float(self.tempo.bpm_at(t)),
            playing=playing,
            beats=float(beats),
            bar_start_beats=float(self.meter.beats_of(bb.bar)),
            bar_number=bb.bar,
            ts_num=sig.num,
            ts_den=sig.den,
            looping=looping,
        )

    def play(
        self,
        plugin: Plugin,
        blocks: BlockSizes | None = None,
        *,
        start: int = 0,
        end: int | None = None,
        realtime: bool = False,
        seeks: dict[int, int] | None = None,
        loop: tuple[int, int, int] | None = None,
    ) -> int:
        """Run ``plugin`` over the song; returns the number of blocks processed.

        ``seeks``: {played sample → jump target}; ``loop``: (loop start, loop end, repeats).
        """
        blocks = blocks or BlockSizes()
        end = self.length if end is None else min(end, self.length)
        plugin.prepare(self.rate, blocks.max)
        sizes = iter(blocks)
        pos, n, t0 = start, 0, time.monotonic()
        pending = dict(seeks or {})
        loops_left = loop[2] if loop else 0
        played = 0
        try:
            while pos < end:
                size = next(sizes)
                stop = min(end, pos + size)
                nxt = [s for s in self._steps if pos < s < stop]  # one tempo per block
                if nxt:
                    stop = nxt[0]
                if loop and loops_left and pos < loop[1] < stop:
                    stop = loop[1]
                jump = next((k for k in pending if pos < k < stop), None)
                if jump is not None:
                    stop = jump
                events = [ParameterEvent(s - pos, name, v) for s, name, v in self._events if pos <= s < stop]
                if pos == start or n == 0:  # the state of every lane at the start of playback
                    events = [
                        ParameterEvent(0, name, float(lane.value_at(self.tempo.beats_at(Fraction(pos, self.rate)))))
                        for name, lane in self.lanes.items()
                    ] + [e for e in events if e.offset > 0]
                plugin.process(
                    self.audio[:, pos:stop], self.transport_at(pos, looping=bool(loop and loops_left)), events
                )
                n += 1
                played += stop - pos
                pos = stop
                if loop and loops_left and pos == loop[1]:
                    loops_left -= 1
                    pos = loop[0]
                elif pos in pending:
                    pos = pending.pop(pos)
                if realtime:
                    ahead = played / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            plugin.release()
        return n
