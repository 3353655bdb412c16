"""The contract between a DAW plugin and the bridge: exactly what VST3/CLAP give a plugin.

A host calls ``prepare(sample_rate, max_block_size)`` once, then ``process(audio, transport,
events)`` for every audio block on its real-time audio thread, then ``release()``. Per block the
plugin sees:

- ``audio``: float32 ``[channels, frames]``, ``frames`` ≤ max_block_size (and varying);
- ``transport``: :class:`TransportInfo` at the block's first sample (position in samples and
  beats, tempo and its per-sample increment, playing, loop, bar start/number, time signature);
- ``events``: the block's :class:`ParameterEvent` s, each at a sample offset inside the block
  (automation of the plugin's own parameters, sample-accurate).

A block never spans a tempo step: hosts that step the tempo start a new block there (a ramp is
carried by ``tempo_inc``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TransportInfo", "ParameterEvent", "Plugin"]


@dataclass(frozen=True)
class TransportInfo:
    sample: int  # timeline position of the block's first sample
    tempo: float  # BPM at the first sample
    playing: bool = True
    beats: float = 0.0  # song position in quarter notes (the host's "ppq position")
    bar_start_beats: float = 0.0
    bar_number: int = 1
    ts_num: int = 4
    ts_den: int = 4
    looping: bool = False
    loop_start_beats: float = 0.0
    loop_end_beats: float = 0.0
    tempo_inc: float = 0.0  # BPM change per sample within the block (CLAP)


@dataclass(frozen=True)
class ParameterEvent:
    offset: int  # sample offset inside the block
    param: str  # the plugin parameter's id
    value: float  # normalised [0, 1]


class Plugin(ABC):
    @abstractmethod
    def prepare(self, sample_rate: int, max_block_size: int) -> None: ...

    @abstractmethod
    def process(self, audio: np.ndarray, transport: TransportInfo, events: Sequence[ParameterEvent]) -> None:
        """Called on the audio thread: must never block, allocate little, and return quickly."""

    @abstractmethod
    def release(self) -> None: ...
