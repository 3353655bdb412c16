"""The top-k sparse autoencoder on a module's per-pixel activation vectors, and its file.

For an activation ``[B, C, H, W]`` every pixel's channel vector x ∈ R^C is one sample:

    z = TopK_k(ReLU(W_enc · (x − b_dec) / s + b_enc))      [F] features, k of them non-zero
    x̂ = s · W_dec z + b_dec                                 [C]

with ``s`` a fixed input scale (the activations' RMS norm when training began) and the
decoder's columns kept at unit norm (Gao et al., "Scaling and Evaluating Sparse Autoencoders",
2024). Editing one feature f from activation a to a' moves x by s·(a' − a)·W_dec[:, f]: exactly
decoding the edited code and adding the reconstruction error back, so an unchanged activation
returns x untouched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bendbridge.protocol.plan import PlanError

from .files import FileContext, check_model, read_file, resolve_file, write_file

__all__ = ["SAE_FORMAT", "SparseAutoencoder", "SAEResource", "load_sae_resource"]

SAE_FORMAT = "bendbridge.sae/1"


class SparseAutoencoder(nn.Module):
    """Top-k sparse autoencoder: ``channels`` C inputs, ``features`` F, ``k`` active per sample."""

    def __init__(self, channels: int, features: int, k: int, scale: float = 1.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(channels, features, generator=g)
        w = w / w.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w)  # [C, F], unit columns
        self.W_enc = nn.Parameter(w.t().clone())  # [F, C], tied at initialisation
        self.b_enc = nn.Parameter(torch.zeros(features))
        self.b_dec = nn.Parameter(torch.zeros(channels))
        self.k = k
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("feature_max", torch.zeros(features))  # largest activation seen per feature
        self.meta: dict[str, Any] = {}

    @property
    def features(self) -> int:
        return self.W_dec.shape[1]

    @property
    def channels(self) -> int:
        return self.W_dec.shape[0]

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] → non-negative pre-activations [N, F]: ReLU(W_enc · (x − b_dec) / s + b_enc), with
        the shift and scale folded into one matrix product (a third of the time on a CPU)."""
        w = (self.W_enc / self.scale).t().contiguous()  # [C, F]
        return torch.addmm(self.b_enc - self.b_dec @ w, x, w).relu_()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] → sparse codes [N, F] with at most k non-zeros per row."""
        p = self.pre(x)
        top = p.topk(self.k, dim=1)
        return torch.zeros_like(p).scatter(1, top.indices, top.values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec.t() * self.scale + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def activation(self, x: torch.Tensor, feature: int) -> torch.Tensor:
        """Feature ``feature``'s code value for each sample [N] (0 where it is not among the top k).

        A feature is among the top k when fewer than k features exceed it: one comparison pass
        over [N, F] instead of a top-k selection (ties at the k-th value, where ``topk`` picks one
        arbitrarily, count as in)."""
        p = self.pre(x)
        a = p[:, feature]
        above = (p > a[:, None]).sum(1)
        return torch.where(above < self.k, a, torch.zeros_like(a))

    def direction(self, feature: int) -> torch.Tensor:
        """The change of x per unit of feature activation: s · W_dec[:, f]. [C]"""
        return self.W_dec[:, feature] * self.scale

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        write_file(
            path,
            SAE_FORMAT,
            self.state_dict(),
            {**meta, "k": self.k, "channels": self.channels, "features": self.features},
        )

    @classmethod
    def load(cls, path: Path, where: str = "sae") -> SparseAutoencoder:
        tensors, meta = read_file(path, SAE_FORMAT, where)
        sae = cls(int(meta["channels"]), int(meta["features"]), int(meta["k"]))
        sae.load_state_dict(tensors)
        sae.meta = meta
        return sae.eval().requires_grad_(False)


class SAEResource:
    """An autoencoder for one module, as the ``sae_feature`` bend reads it (a copy per device and dtype)."""

    def __init__(self, sae: SparseAutoencoder, name: str):
        self.sae, self.name = sae, name
        self._copies: dict[tuple, SparseAutoencoder] = {}

    def at_step(self, step: int, device: torch.device, dtype: torch.dtype) -> SparseAutoencoder:
        key = (device, dtype)
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(self.sae).to(device=device, dtype=dtype)
        return self._copies[key]

    def check_params(self, params: dict[str, Any], where: str) -> None:
        f = params.get("feature", 0)
        if not 0 <= f < self.sae.features:
            raise PlanError(
                f"{where}.params.feature", f"{f} out of range; {self.name} has features [0, {self.sae.features - 1}]"
            )


def load_sae_resource(value: str, ctx: FileContext) -> SAEResource:
    """The ``sae`` parameter of an ``sae_feature`` bend, checked against the model, module and channels."""
    path = resolve_file(value, ctx)
    sae = SparseAutoencoder.load(path, ctx.where)
    check_model(path, sae.meta, ctx, "sparse autoencoder")
    if sae.meta.get("module") != ctx.module:
        raise PlanError(
            ctx.where, f"{path.name} was trained on {sae.meta.get('module')!r}, not on the bend's target {ctx.module!r}"
        )
    if ctx.channels is not None:
        raise PlanError(ctx.where, "an sae_feature bend acts on every channel of its module; remove the channel subset")
    if sae.channels != ctx.shape[0]:
        raise PlanError(ctx.where, f"{path.name} reads {sae.channels} channels, {ctx.module} has {ctx.shape[0]}")
    return SAEResource(sae, path.name)
