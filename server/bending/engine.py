"""The bending engine: per-batch parameter state, operator application and forward hooks.

Hooks are installed once (:func:`install_hooks`) and read the engine's current state, so
parameters change every frame — and every sample of a batch — without re-installing anything.

Row layouts: a batch renders B frames. With classifier-free guidance the U-Net sees 2B rows,
``[uncond frame 0..B-1, cond frame 0..B-1]`` (layout ``"guided"``); latents and text embeddings
have B rows (layout ``"frames"``). A bend touches only the rows of its branch whose parameters
are not the identity and whose ``mix`` is not 0; untouched rows come back bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bendbridge.protocol.errors import hint
from bendbridge.protocol.frames import FrameParams
from bendbridge.protocol.operators import MIX
from bendbridge.protocol.plan import UNET, PlanError

from .binding import BoundBend
from .layers import first_tensor, module_hooks, replace_first_tensor

__all__ = ["BendEngine", "FrameParamError", "Fault", "install_hooks"]


class FrameParamError(PlanError):
    """A per-frame parameter value is unknown, non-finite or out of range."""


@dataclass(frozen=True)
class Fault:
    """A bend turned finite values into NaN or inf for one frame."""

    frame: int
    bend: str
    op: str
    step: int
    params: dict[str, Any]

    def __str__(self) -> str:
        vals = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"frame {self.frame}: bend {self.bend!r} ({self.op}, {vals}) produced NaN/inf at step {self.step}"


@dataclass
class _RowState:
    rows: torch.Tensor  # [R'] long, on device: rows of the layout this bend touches
    frames: list[int]  # frame index of each touched row
    params: dict[str, torch.Tensor]  # per-sample params gathered for those rows
    mix: torch.Tensor | None  # [R'] or None when every mix is 1
    all_rows: bool


@dataclass
class _BendState:
    values: dict[str, list[Any]]  # per-sample values by param, one per frame (for reports)
    layouts: dict[str, _RowState | None] = field(default_factory=dict)


class BendEngine:
    """Holds bound bends and the state their hooks read (current step, per-frame parameters)."""

    def __init__(self, bound: Sequence[BoundBend], device: torch.device | str = "cpu", check_finite: bool = True):
        self.bound = list(bound)
        self.device = torch.device(device)
        self.check_finite = check_finite
        self.step = 0
        self.batch = 0
        self.guided = False
        self._state: list[_BendState] = []
        self._checks: list[tuple[int, int, list[int], torch.Tensor]] = []
        self._mask_cache: dict[tuple, torch.Tensor] = {}
        self._ids = {bb.bend.id: bb for bb in self.bound}
        self.word_masks: Mapping[str, torch.Tensor] = {}  # the batch's frames: word → [B, T] (bend_text sets it)

    # ------------------------------------------------------------------ per-batch parameters
    def resolve(self, frames: Sequence[FrameParams]) -> list[dict[str, dict[str, Any]]]:
        """Validate per-frame overrides and merge them over the plan's base values.

        Returns, per bend, per param, the list of B values. Raises FrameParamError naming
        ``frames[i].<bend id>.<param>`` and the allowed range.
        """
        for fi, fp in enumerate(frames):
            for bid, vals in fp.items():
                if bid not in self._ids:
                    raise FrameParamError(
                        f"frames[{fi}].{bid}", f"no bend with id {bid!r}{hint(bid, self._ids, 'bends')}"
                    )
                spec = self._ids[bid].spec
                for k in vals:
                    if spec.frame_param(k) is None:
                        per = spec.frame_params()
                        raise FrameParamError(
                            f"frames[{fi}].{bid}.{k}",
                            f"not a per-frame parameter of {spec.name!r}{hint(k, per, 'per-frame parameters')}",
                        )
        return [self._resolve_bend(bb, frames) for bb in self.bound]

    def _resolve_bend(self, bb: BoundBend, frames: Sequence[FrameParams]) -> dict[str, list[Any]]:
        """One bend's values of every per-frame parameter, one per frame (the plan's where not given)."""
        per: dict[str, list[Any]] = {}
        for k in bb.spec.frame_params():
            base, param = bb.bend.base_value(k), bb.spec.frame_param(k)
            col = []
            for fi, fp in enumerate(frames):
                v = fp.get(bb.bend.id, {}).get(k, base)
                col.append(v if v is base else param.check(v, f"frames[{fi}].{bb.bend.id}.{k}", FrameParamError))
            per[k] = col
        return per

    def set_frames(self, frames: Sequence[FrameParams], *, guided: bool) -> None:
        """Set the parameters of the next batch of ``len(frames)`` frames."""
        resolved = self.resolve(frames)
        self.batch, self.guided, self.step = len(frames), guided, 0
        self._checks = []
        self._state = []
        for bb, per in zip(self.bound, resolved):
            active = self._active_frames(bb, per)
            st = _BendState(values=per)
            st.layouts["frames"] = self._rows(bb, per, active, "frames")
            st.layouts["guided"] = self._rows(bb, per, active, "guided") if guided else st.layouts["frames"]
            self._state.append(st)

    def _active_frames(self, bb: BoundBend, per: dict[str, list[Any]]) -> list[bool]:
        ident = bb.spec.identity_values()
        act = []
        for fi in range(self.batch):
            if per["mix"][fi] == MIX.identity:
                act.append(False)
            elif ident is None:
                act.append(True)
            else:
                act.append(any(per[k][fi] != v for k, v in ident.items()))
        return act

    def _rows(self, bb: BoundBend, per: dict[str, list[Any]], active: list[bool], layout: str) -> _RowState | None:
        b = self.batch
        branch = bb.bend.branch
        if not self.guided and branch == "uncond":
            return None  # without guidance there is no unconditional branch
        if layout == "frames" or not self.guided:
            # B rows; callers of the 'frames' layout (latent 'both', text) gate by branch
            rows = frames = [fi for fi in range(b) if active[fi]]
        else:
            rows, frames = [], []
            for half, name in ((0, "uncond"), (1, "cond")):
                if branch in ("both", name):
                    for fi in range(b):
                        if active[fi]:
                            rows.append(half * b + fi)
                            frames.append(fi)
        if not rows:
            return None
        total = 2 * b if (layout == "guided" and self.guided) else b
        params = {}
        for k, col in per.items():
            if k == "mix":
                continue
            params[k] = torch.tensor([col[f] for f in frames], dtype=torch.float64).to(self.device)
        mixes = [per["mix"][f] for f in frames]
        mix = None if all(m == 1.0 for m in mixes) else torch.tensor(mixes, dtype=torch.float64).to(self.device)
        return _RowState(
            torch.tensor(rows, dtype=torch.long, device=self.device), frames, params, mix, len(rows) == total
        )

    # ------------------------------------------------------------------ application
    def in_steps(self, bb: BoundBend) -> bool:
        return bb.bend.target.in_steps(self.step)

    def _subset_mask(self, bb: BoundBend, x: torch.Tensor) -> torch.Tensor | None:
        b = bb.bend
        if b.element_fraction is None and b.region is None:
            return None
        key = (bb.index, tuple(x.shape[1:]), x.device, x.dtype)
        m = self._mask_cache.get(key)
        if m is None:
            m = torch.ones(x.shape[1:], dtype=torch.bool)
            if b.element_fraction is not None:
                g = torch.Generator().manual_seed(b.seed + 1)
                m &= torch.rand(x.shape[1:], generator=g) < b.element_fraction
            if b.region is not None:
                h, w = x.shape[-2:]
                x0, y0, x1, y1 = b.region
                r = torch.zeros(h, w, dtype=torch.bool)
                r[
                    int(y0 * h) : max(int(y0 * h) + 1, math.ceil(y1 * h)),
                    int(x0 * w) : max(int(x0 * w) + 1, math.ceil(x1 * w)),
                ] = True
                m &= r
            m = m.to(x.device)
            self._mask_cache[key] = m
        return m

    def apply(
        self, bb: BoundBend, x: torch.Tensor, layout: str, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bend the rows of ``x`` that ``bb`` touches in ``layout``; other rows are returned as is.

        ``x`` is [R, C, H, W] (latent/module) or [R, T, D] (text); ``token_mask`` [R, T] limits a
        text bend to a word's token positions. Returns ``x`` itself when nothing is touched.
        """
        st = self._state[bb.index].layouts[layout]
        if st is None:
            return x
        xs = x if st.all_rows else x.index_select(0, st.rows)
        if bb.channels is not None:
            ch = torch.tensor(bb.channels, device=x.device)
            xc = xs.index_select(1, ch)
        else:
            xc = xs
        tm = None
        if token_mask is not None:
            tm = token_mask if st.all_rows else token_mask.index_select(0, st.rows)
        extra = {"token_mask": tm} if bb.spec.anchored and xc.ndim == 3 else {}
        y = bb.fn(xc, **bb.static_at(self.step, x.device, x.dtype), **st.params, **extra)
        mask = self._subset_mask(bb, xc)
        if tm is not None and not extra:
            mask = tm.unsqueeze(-1) if mask is None else mask & tm.unsqueeze(-1)
        if mask is not None:
            y = torch.where(mask, y, xc)
        if st.mix is not None:
            y = torch.lerp(xc, y, st.mix.to(y.dtype).reshape(-1, *([1] * (y.ndim - 1))))
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        if self.check_finite:
            # one reduction per tensor: a row's sum is non-finite iff it holds NaN/inf (or its
            # finite values overflow float32 when added up, which only values near 1e38 can do)
            bad = ~torch.isfinite(y.flatten(1).sum(1, dtype=torch.float32)) & torch.isfinite(
                xc.flatten(1).sum(1, dtype=torch.float32)
            )
            self._checks.append((bb.index, self.step, st.frames, bad))
        if bb.channels is not None:
            y = xs.index_copy(1, ch, y)
        if not st.all_rows:
            y = x.index_copy(0, st.rows, y)
        return y

    def bend_latent(self, latents: torch.Tensor, step: int, layout: str) -> torch.Tensor:
        """Apply the latent bends for ``step``: branch 'both' on the B-row latent (``layout``
        'frames', persisting), branch 'cond'/'uncond' on the 2B-row model input ('guided')."""
        self.step = step
        for bb in self.bound:
            t = bb.bend.target
            if t.kind != "latent" or t.step != step:
                continue
            if (layout == "frames") == (bb.bend.branch == "both" or not self.guided):
                latents = self.apply(bb, latents, layout)
        return latents

    def bend_text(self, emb: torch.Tensor, branch: str, word_masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Apply the text bends to one branch's embeddings [B, T, D]; those read only by some
        cross-attentions (``at``) act in those layers' hooks, with the masks kept for them."""
        if branch == "cond":
            self.word_masks = word_masks
        for bb in self.bound:
            if bb.bend.target.kind == "text" and not bb.reads and bb.bend.branch in ("both", branch):
                word = bb.bend.target.word
                emb = self.apply(bb, emb, "frames", word_masks.get(word) if word else None)
        return emb

    def faults(self) -> list[Fault]:
        """Bends that turned finite values non-finite in the last batch (reads back lazily)."""
        out = []
        for bi, step, frames, bad in self._checks:
            if not bool(bad.any()):
                continue
            bb = self.bound[bi]
            for fi, is_bad in zip(frames, bad.tolist()):
                if is_bad:
                    vals = {k: v[fi] for k, v in self._state[bi].values.items()}
                    out.append(Fault(fi, bb.bend.id, bb.spec.name, step, vals))
        return out

    def _layout(self, bb: BoundBend, rows: int) -> str:
        if self.guided and rows == 2 * self.batch:
            return "guided"
        if rows == self.batch:
            return "frames"
        raise RuntimeError(
            f"bend {bb.bend.id!r}: activation batch {rows} matches neither {self.batch} frames "
            f"nor {2 * self.batch} guided rows"
        )

    def adapter_hook_for(self, bb: BoundBend, layer: str):
        """A forward hook for linear layer ``layer`` of ``bb``'s adapter: adds ``weight · mix ·
        (x Aᵀ) Bᵀ`` to the output rows whose weight is not 0; other rows are left as they are."""
        res = bb.static["adapter"]

        def hook(_module, args, output):
            if not self.in_steps(bb) or not isinstance(output, torch.Tensor):
                return None
            st = self._state[bb.index].layouts[self._layout(bb, output.shape[0])]
            if st is None:
                return None
            x = args[0]
            xs = x if st.all_rows else x.index_select(0, st.rows)
            weight = st.params["weight"] if st.mix is None else st.params["weight"] * st.mix
            delta = bb.fn(xs, adapter=res.layers_on(x.device, x.dtype)[layer], weight=weight)
            return output + delta if st.all_rows else output.index_add(0, st.rows, delta.to(output.dtype))

        return hook

    def context_hook_for(self, bb: BoundBend):
        """A pre-hook for a cross-attention that ``bb`` (a text bend with ``at``) changes: it bends
        the context the layer reads (``encoder_hidden_states`` [R, T, D]) as ``bend_text`` would,
        the unguided rows with no word positions."""

        def hook(_module, args, kwargs):
            ctx = kwargs.get("encoder_hidden_states")
            if ctx is None or ctx.ndim != 3:
                return None
            layout = self._layout(bb, ctx.shape[0])
            word = bb.bend.target.word
            mask = self.word_masks.get(word) if word else None
            if mask is not None and layout == "guided":
                mask = torch.cat([torch.zeros_like(mask), mask])
            y = self.apply(bb, ctx, layout, mask)
            return None if y is ctx else (args, {**kwargs, "encoder_hidden_states": y})

        hook.before = True  # type: ignore[attr-defined]
        return hook

    def hook_for(self, bb: BoundBend):
        def hook(_module, _args, output):
            if not self.in_steps(bb):
                return None
            t = first_tensor(output)
            if t is None or t.ndim != 4:
                return None
            y = self.apply(bb, t, self._layout(bb, t.shape[0]))
            return None if y is t else replace_first_tensor(output, y)

        return hook


def install_hooks(unet: torch.nn.Module, engine: BendEngine):
    """A context manager registering a forward hook for every module bend, a pre-hook on every
    cross-attention a text bend with ``at`` reads, and a hook on every layer of every adapter
    (``lora`` on the ``unet`` target), in plan order; every handle is removed on exit, also when
    installing fails halfway or the body raises."""
    hooks, owners = [], []
    for bb in engine.bound:
        if bb.module is not None:
            hooks.append((bb.module, engine.hook_for(bb)))
            owners.append(bb)
        elif bb.reads:
            hooks += [(name, engine.context_hook_for(bb)) for name in bb.reads]
            owners += [bb] * len(bb.reads)
        elif bb.bend.target.kind == UNET:
            res = bb.static["adapter"]
            res.adapter.check_unet(unet, res.name, f"bend[{bb.index}].params.adapter")
            for name in res.adapter.layers:
                hooks.append((name, engine.adapter_hook_for(bb, name)))
                owners.append(bb)
    return module_hooks(
        unet,
        hooks,
        lambda i, name: PlanError(f"bend[{owners[i].index}].target", f"module {name!r} is not in this U-Net"),
    )
