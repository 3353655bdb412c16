"""How a pipeline's text encoders condition its U-Net, for SD 1.x/2.x and SDXL alike.

SD 1.x / 2.x: one CLIP text encoder; the U-Net reads its last hidden state [T, D] through
cross-attention.

SDXL (Podell et al. 2023, "SDXL: Improving Latent Diffusion Models for High-Resolution Image
Synthesis"): two encoders read the same tokens; their penultimate hidden states are laid side by
side ([T, 768 + 1280] = [T, 2048]) for cross-attention, and the U-Net also takes *added
conditioning*: the second encoder's pooled, projected embedding [1280] and six size/crop ids
(original height and width, crop top and left, target height and width, in pixels) embedded
with the timestep.

The renderer moves one text tensor per row through batching, guidance, prefix sharing and row
sharing. For SDXL the pooled embedding rides in that tensor as one extra token (zero-padded to the
hidden width) appended after the T token rows, so every row selection keeps it with its row;
:meth:`TextConditioning.unet_kwargs` splits it off again at the U-Net's door. Text bends act on
the token rows before packing (both encoders' halves of each token: a word weight scales the word
in both); the pooled embedding follows the prompt mix, as the hidden states do.
"""

from __future__ import annotations

from typing import Any

import torch

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["TIME_IDS", "TextConditioning", "added_conditioning", "is_sdxl_unet", "stand_in_conditioning"]

TIME_IDS = 6  # SDXL's size/crop conditioning: original (h, w), crop (top, left), target (h, w)


def is_sdxl_unet(unet_config: Any) -> bool:
    """Whether the U-Net takes SDXL's added conditioning (pooled text + size/crop ids)."""
    kind = getattr(unet_config, "addition_embed_type", None)
    if kind in (None, "text_time"):
        return kind == "text_time"
    raise BendbridgeError(
        "--model", f"U-Net with addition_embed_type={kind!r} is not a Stable Diffusion or SDXL U-Net; not supported"
    )


def added_conditioning(
    unet_config: Any, pooled: torch.Tensor, height: int, width: int
) -> dict[str, torch.Tensor] | None:
    """SDXL's ``added_cond_kwargs`` for rows with pooled text ``pooled`` [B, Dp] at an image of
    ``height`` × ``width`` pixels (no crop, original size = target size); None for other U-Nets."""
    if not is_sdxl_unet(unet_config):
        return None
    ids = torch.tensor([height, width, 0, 0, height, width], device=pooled.device, dtype=pooled.dtype)
    return {"text_embeds": pooled, "time_ids": ids.expand(pooled.shape[0], TIME_IDS)}


def pooled_width(unet_config: Any) -> int:
    """The pooled text width an SDXL U-Net expects (its added projection's input less the time ids)."""
    return int(unet_config.projection_class_embeddings_input_dim) - TIME_IDS * int(unet_config.addition_time_embed_dim)


def stand_in_conditioning(
    unet_config: Any, batch: int, seq_len: int, height: int, width: int, device: Any, dtype: torch.dtype,
    random: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """U-Net keyword arguments with stand-in text (zeros, or normal noise with ``random``) for
    ``batch`` rows at an image of ``height`` × ``width`` pixels: for listing layers and timing
    U-Net calls of any family (SDXL's added conditioning included)."""
    make = torch.randn if random else torch.zeros
    kwargs: dict[str, Any] = {
        "encoder_hidden_states": make(batch, seq_len, unet_config.cross_attention_dim, device=device, dtype=dtype)
    }
    if is_sdxl_unet(unet_config):
        pooled = make(batch, pooled_width(unet_config), device=device, dtype=dtype)
        kwargs["added_cond_kwargs"] = added_conditioning(unet_config, pooled, height, width)
    return kwargs


class TextConditioning:
    """Encodes prompts for one pipeline and hands the U-Net its conditioning.

    ``width`` is the cross-attention width D; ``pooled_width`` is Dp for SDXL, 0 otherwise."""

    def __init__(self, pipe: Any, unet_config: Any, height: int, width: int):
        from bendbridge.server.model import text_encoders

        self.encoders = text_encoders(pipe)
        self.tokenizers = [t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t is not None]
        self.xl = is_sdxl_unet(unet_config)
        if self.xl != (len(self.encoders) == 2):
            raise BendbridgeError(
                "--model", "an SDXL U-Net needs two text encoders (text_encoder and text_encoder_2), and only it does"
            )
        self.unet_config = unet_config
        self.height, self.image_width = height, width
        self.width = sum(int(e.config.hidden_size) for e in self.encoders)
        self.pooled_width = pooled_width(unet_config) if self.xl else 0
        if self.width != int(unet_config.cross_attention_dim):
            raise BendbridgeError(
                "--model", f"the text encoders give {self.width} channels but the U-Net attends to "
                f"{unet_config.cross_attention_dim}"
            )  # fmt: skip
        self.seq_len = int(self.tokenizers[0].model_max_length)
        # SDXL pipelines condition the unguided half on zeros when the negative prompt is empty
        self.zero_empty_negative = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))

    def ids(self, text: str, tokenizer: int = 0) -> list[int]:
        tok = self.tokenizers[tokenizer]
        return tok(text, padding="max_length", max_length=self.seq_len, truncation=True).input_ids

    @torch.no_grad()
    def encode(self, prompt: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``prompt`` → hidden states [T, D] and pooled embedding [Dp] (None without SDXL)."""
        if not self.xl:
            ids = torch.tensor([self.ids(prompt)], device=device)
            return self.encoders[0](ids)[0][0], None
        hidden, pooled = [], None
        for k, encoder in enumerate(self.encoders):
            out = encoder(torch.tensor([self.ids(prompt, k)], device=device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2][0])
            pooled = out[0][0]  # the last encoder's projected, pooled embedding
        return torch.cat(hidden, dim=-1), pooled

    def pack(self, hidden: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        """Hidden states [B, T, D] and pooled [B, Dp] → the renderer's text rows [B, T(+1), D]."""
        if not self.xl:
            return hidden
        assert pooled is not None
        extra = hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2])
        extra[:, 0, : pooled.shape[1]] = pooled.to(hidden.dtype)
        return torch.cat([hidden, extra], dim=1)

    def unet_kwargs(self, text: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments for ``unet(sample, t, **kw)`` from packed text rows [B, T(+1), D]."""
        if not self.xl:
            return {"encoder_hidden_states": text}
        pooled = text[:, self.seq_len, : self.pooled_width]
        return {
            "encoder_hidden_states": text[:, : self.seq_len],
            "added_cond_kwargs": added_conditioning(self.unet_config, pooled, self.height, self.image_width),
        }
