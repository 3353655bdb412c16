"""Word attention (``bendbridge analyse attention``): how much of the text encoder's self-attention
each word of the prompt receives.

The text encoder (CLIP's, causal) is run once with its attention weights kept, ``A[l, h, q, t]``
(layer, head, query token, key token). A word receives, in each layer and head, the attention its
tokens get summed, averaged over the prompt's query tokens (the start token to the end token; the
padding after it is left out); the bar is the mean over heads and layers. The start token is drawn
as its own bar: CLIP's heads park most of their attention on it (an "attention sink"), which says
little about the words. In a causal encoder a token is seen only by the queries after it, so
earlier words tend to receive more. Per-head maps (``--per-head``) show the numbers per layer and head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bendbridge.bridge.report import pyplot
from bendbridge.server.model import LoadedModel

from .words import Word, prompt_words

__all__ = ["WordAttention", "word_attention", "attention_figure"]


@dataclass
class WordAttention:
    """``labels``: "<start>", the words in order, "<end>"; ``received`` [L, H, labels]."""

    prompt: str
    labels: list[str]
    received: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.received.mean((0, 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "layers": int(self.received.shape[0]),
            "heads": int(self.received.shape[1]),
            "labels": self.labels,
            "attention": [round(float(v), 5) for v in self.mean],
            "per_layer_head": np.round(self.received, 5).tolist(),
        }


@contextmanager
def eager_attention(text_encoder: torch.nn.Module) -> Iterator[None]:
    """The text encoder with attention computed explicitly (fused kernels do not return the weights)."""
    config = text_encoder.config
    before = getattr(config, "_attn_implementation", None)
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


@torch.no_grad()
def word_attention(model: LoadedModel, prompt: str) -> WordAttention:
    tok, te = model.pipe.tokenizer, model.pipe.text_encoder
    words: list[Word] = prompt_words(tok, prompt)
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    end = ids.index(tok.eos_token_id) if tok.eos_token_id in ids else len(ids) - 1
    with eager_attention(te):
        out = te(torch.tensor([ids], device=te.device), output_attentions=True)
    a = torch.stack(out.attentions)[:, 0].float().cpu().numpy()  # [L, H, T, T]
    queries = a[:, :, : end + 1, :]  # the start token … the end token ask
    columns = [(0,), *(w.positions for w in words), (end,)]
    received = np.stack([queries[..., list(cols)].sum(-1).mean(-1) for cols in columns], axis=-1)
    return WordAttention(prompt, ["<start>", *(w.text for w in words), "<end>"], received)


def attention_figure(wa: WordAttention, png: Path, per_head: bool = False) -> None:
    """A bar per word (start and end tokens apart, in grey); with ``per_head``, a heads × words map per layer."""
    plt = pyplot("--out")
    layers = wa.received.shape[0]
    rows = 2 if per_head else 1
    fig = plt.figure(figsize=(max(6.0, 0.7 * len(wa.labels) + 2), 3.8 * rows))
    fig.subplots_adjust(hspace=0.85)
    ax = fig.add_subplot(rows, 1, 1)
    colours = ["0.6"] + ["tab:blue"] * (len(wa.labels) - 2) + ["0.6"]
    ax.bar(range(len(wa.labels)), wa.mean, color=colours)
    ax.set_xticks(range(len(wa.labels)), wa.labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("attention received (mean over\nqueries, heads and layers)")
    ax.set_title(f"word attention in the text encoder: '{wa.prompt}'", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if per_head:
        top = float(wa.received.max())
        for layer in range(layers):
            axl = fig.add_subplot(rows, layers, layers + layer + 1)
            im = axl.imshow(wa.received[layer], cmap="viridis", vmin=0, vmax=top, aspect="auto")
            axl.set_xticks(range(len(wa.labels)), wa.labels, rotation=90, fontsize=6)
            axl.set_yticks(range(wa.received.shape[1]))
            axl.set_title(f"layer {layer + 1}", fontsize=8)
            if layer == 0:
                axl.set_ylabel("head")
        fig.colorbar(im, ax=fig.axes[1:], fraction=0.02, label="attention received")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
