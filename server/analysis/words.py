"""Words of a prompt and their token positions (CLIP BPE: a word's last token ends in ``</w>``), and
the float pictures the analyses compare (the decoder's output before rounding to 8 bits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.server.render import FrameSpec, Renderer

__all__ = ["Word", "prompt_words", "render_float"]

END_OF_WORD = "</w>"


@dataclass(frozen=True)
class Word:
    """A word of the prompt: its text, its index among the words, its token positions [T]."""

    text: str
    index: int
    positions: tuple[int, ...]


def prompt_words(tokenizer, prompt: str, field: str = "PROMPT") -> list[Word]:
    """The prompt's words in order (start and end tokens and padding left out). A prompt longer
    than the text encoder reads is refused (its cut words would have no place)."""
    ids = tokenizer(prompt, truncation=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        raise BendbridgeError(field, f"{len(ids) - 2} tokens; the text encoder reads at most {limit - 2}")
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token}
    words, current = [], []
    for pos, tok in enumerate(tokens):
        if tok in special:
            continue
        current.append((pos, tok))
        if tok.endswith(END_OF_WORD):
            text = "".join(t for _, t in current)[: -len(END_OF_WORD)]
            words.append(Word(text, len(words), tuple(p for p, _ in current)))
            current = []
    if not words:
        raise BendbridgeError(field, f"{prompt!r} has no words")
    return words


@torch.no_grad()
def render_float(renderer: Renderer, frames: Sequence[FrameSpec]) -> np.ndarray:
    """Frames decoded without rounding: float32 [B, H, W, 3] in 0–255 levels (small changes that
    8-bit frames would round away stay measurable)."""
    out = []
    for s in range(0, len(frames), renderer.config.max_batch):
        latents = renderer.denoise(frames[s : s + renderer.config.max_batch]).latents
        out.append(renderer.decode_levels(latents).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)
