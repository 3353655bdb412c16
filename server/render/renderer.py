"""Batched, bent rendering: a batch of per-frame parameter sets → images in one denoising pass.

The renderer owns the denoising loop (rather than calling the pipeline) so it can bend the
latent before any step, switch hooks per step, and give each frame of a batch its own
parameters, seed, noise-walk angle and prompt mix. Text embeddings are cached across frames, and
so are the denoising steps before the first bend acts (see ``_prefix``); in the step where the
first module bend acts, the U-Net stages before it run once per distinct frame start
(see ``_shared_rows``).
Frames of a batch are independent: rendering frames together or one at a time gives the same
images (up to float rounding of batched kernels).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from bendbridge.protocol.frames import FrameParams
from bendbridge.protocol.plan import UNET, BendPlan, PlanError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.bending.binding import ModelFacts, bind_plan
from bendbridge.server.bending.engine import BendEngine, Fault, install_hooks
from bendbridge.server.bending.layers import LayerInfo, list_layers
from bendbridge.server.model import LoadedModel, ModelDefaults

from ._prefix import PrefixCache, first_bent_step, shareable
from ._shared_rows import RowSharing, SplitPoint, guided_rows, row_sharing, split_point, unet_stages, widening
from .conditioning import TextConditioning
from .inversion import ddim_scheduler
from .schedulers import make_scheduler

__all__ = ["RenderConfig", "FrameSpec", "FrameResult", "Denoised", "Renderer", "unet_replica"]


@dataclass(frozen=True)
class RenderConfig:
    """What a renderer renders: the render settings (None fields: the model's defaults) and the
    bend plan; and how: scheduler, frames per denoising pass, NaN checks, prefix sharing."""

    settings: RenderSettings = RenderSettings(("a red circle on a blue background",))
    plan: BendPlan = field(default_factory=BendPlan)
    scheduler: str = "default"
    max_batch: int = 8
    check_finite: bool = True
    share_prefix: bool = True  # denoise the steps before the first bend once per (seed, angle, prompt mix)


@dataclass(frozen=True)
class FrameSpec:
    """One frame: per-bend parameter overrides, and optional seed, noise angle and prompt mix.

    ``noise_angle`` (radians) walks the start noise on a circle: cos θ·N₁ + sin θ·N₂, which keeps
    its variance. ``prompt_weights`` (one per prompt) interpolates the prompt embeddings. A frame
    with a ``start_latent`` starts from it at ``start_step`` instead of from noise, and is denoised
    with DDIM, the scheduler it was inverted with.
    """

    params: FrameParams = field(default_factory=dict)
    seed: int | None = None
    noise_angle: float = 0.0
    prompt_weights: tuple[float, ...] | None = None
    start_latent: Any = field(default=None, compare=False)  # [C, h, w]: an inverted picture (see inversion.py)
    start_step: int = 0  # the denoising step ``start_latent`` belongs to; seed and angle are then unused

    @classmethod
    def of_prompt(cls, index: int, prompts: int, **kw: Any) -> FrameSpec:
        """A frame of prompt ``index`` alone, of a session's ``prompts`` prompts (one-hot weights)."""
        return cls(prompt_weights=tuple(float(j == index) for j in range(prompts)), **kw)


@dataclass(frozen=True)
class Denoised:
    """A batch after the U-Net: latents [B, C, h, w] and the bends' faults, ready to decode."""

    latents: torch.Tensor
    faults: list[Fault]


@dataclass
class FrameResult:
    image: np.ndarray  # [H, W, 3] uint8
    nonfinite: bool = False  # the latent held NaN/inf before decoding
    black: bool = False
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.nonfinite or self.black)

    @property
    def status(self) -> str:
        """``nan`` (non-finite latent), ``black`` or ``ok`` — as written in manifests."""
        return "nan" if self.nonfinite else "black" if self.black else "ok"


def unet_replica(unet: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``unet`` whose modules are its own (hooks on one do not fire on the other) and
    whose weights and buffers are the same tensors: no memory is copied. For inference only."""
    shared = {id(t): t for t in (*unet.parameters(), *unet.buffers())}
    return copy.deepcopy(unet, memo=shared)


class Renderer:
    """Renders frames of one session (model, settings, plan) in batches."""

    def __init__(self, model: LoadedModel, config: RenderConfig, unet: torch.nn.Module | None = None):
        """``unet``: a replica of the model's U-Net to render with (see :func:`unet_replica`), so
        that several renderers bend the same model in parallel, each with its own hooks."""
        self.model, self.config = model, config
        pipe = model.pipe
        self.unet, self.text_encoder, self.tokenizer = unet or pipe.unet, pipe.text_encoder, pipe.tokenizer
        self.vae = model.decoder  # the pipeline's VAE, or a tiny decoder reading the same latents
        self.vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.settings = self._resolve(config.settings, model.defaults)
        self.steps, self.guidance = self.settings.steps, self.settings.guidance
        self.width, self.height = self.settings.width, self.settings.height
        self.cond = TextConditioning(pipe, self.unet.config, self.height, self.width)
        self.device = self.unet.device
        self.dtype = self.unet.dtype
        self.guided = self.guidance > 1.0
        self.scheduler = make_scheduler(pipe.scheduler, config.scheduler)
        self.prompts = self.settings.prompts
        self.seq_len = self.cond.seq_len
        self._layers: list[LayerInfo] | None = None
        self._emb: dict[str, torch.Tensor] = {}
        self._pooled: dict[str, torch.Tensor] = {}
        self.bound = bind_plan(
            config.plan,
            self.layers if any(b.target.kind == "module" for b in config.plan.bends) else [],
            latent_channels=self.unet.config.in_channels,
            text_dim=self.cond.width,
            num_steps=self.steps,
            facts=self.model_facts(),
        )
        self.engine = BendEngine(self.bound, self.device, check_finite=config.check_finite)
        self._word_masks = self._build_word_masks()
        self.timings: dict[str, float] = {"text": 0.0, "denoise": 0.0, "decode": 0.0}
        self.prefix_steps = (
            first_bent_step(self.bound, self.steps) if config.share_prefix and shareable(self.scheduler) else 0
        )
        self.prefix = PrefixCache()
        self._stages = unet_stages(self.unet)
        self.split = self._split_point() if config.share_prefix else None

    def _resolve(self, settings: RenderSettings, defaults: ModelDefaults) -> RenderSettings:
        """``settings`` with the model's defaults filled in; the size must suit the VAE and U-Net."""
        native = self.unet.config.sample_size * self.vae_factor
        resolved = replace(
            settings,
            steps=settings.steps or defaults.steps,
            guidance=settings.guidance if settings.guidance is not None else defaults.guidance,
            width=settings.width or native,
            height=settings.height or native,
        )
        step = self.vae_factor * 4
        for name in ("width", "height"):
            if getattr(resolved, name) % step:
                raise PlanError(
                    f"render.{name}", f"{getattr(resolved, name)} is not a multiple of {step}, which this model needs"
                )
        return resolved

    def _split_point(self) -> SplitPoint | None:
        """Where step ``prefix_steps`` stops being shared between frames with the same start, or None."""
        d = self.prefix_steps
        active = []
        for bb in self.bound:
            t = bb.bend.target
            if t.kind == "text" or (t.kind == "latent" and t.step == d) or (t.kind == UNET and t.in_steps(d)):
                return None  # the rows differ before the U-Net runs, or in its first layers (an adapter)
            if bb.module is not None and t.in_steps(d):
                active.append(bb.module)
        return split_point(self._stages, active) if active else None

    # ------------------------------------------------------------------ model facts
    def model_facts(self) -> ModelFacts:
        """The model that steering files and adapters must match; bare file names are looked up in
        its folder's ``steering/`` and ``adapters/`` (the embedded model's, for a model that shares its parts)."""
        from bendbridge.server.model import EMBEDDED_MODEL
        from bendbridge.server.steering.files import ADAPTERS_DIR, STEERING_DIR

        roots = [self.model.path] if self.model.path else []
        roots.append(EMBEDDED_MODEL)
        return ModelFacts(
            self.model.base_name,
            self.unet,
            tuple(r / d for r in roots for d in (STEERING_DIR, ADAPTERS_DIR)),
            embed=self.embed,
        )

    @property
    def layers(self) -> list[LayerInfo]:
        if self._layers is None:
            self._layers = list_layers(
                self.unet,
                seq_len=self.seq_len,
                height=self.height // self.vae_factor,
                width=self.width // self.vae_factor,
            )
        return self._layers

    def _ids(self, text: str) -> list[int]:
        return self.cond.ids(text)

    def _build_word_masks(self) -> dict[str, torch.Tensor]:
        """Per text-bend word (or ``a|b|…`` alternatives): a [P, T] mask of the token positions of
        every occurrence of the word(s) in each prompt."""
        masks = {}
        for bb in self.bound:
            word = bb.bend.target.word
            if bb.bend.target.kind != "text" or not word or word in masks:
                continue
            m = torch.zeros(len(self.prompts), self.seq_len, dtype=torch.bool)
            wids = [self.tokenizer(w, add_special_tokens=False).input_ids for w in word.split("|")]
            for p, prompt in enumerate(self.prompts):
                ids = self._ids(prompt)
                for wid in wids:
                    for s in range(len(ids) - len(wid) + 1):
                        if ids[s : s + len(wid)] == wid:
                            m[p, s : s + len(wid)] = True
            if not m.any():
                raise PlanError(
                    f"bend[{bb.index}].word", f"{word!r} does not occur in any prompt: {list(self.prompts)}"
                )
            masks[word] = m.to(self.device)
        return masks

    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """Text-encoder output for ``prompt`` (SDXL: both encoders' side by side), cached. -> [T, D]"""
        e = self._emb.get(prompt)
        if e is None:
            e, pooled = self.cond.encode(prompt, self.device)
            self._emb[prompt] = e = e.to(self.dtype)
            if pooled is not None:
                self._pooled[prompt] = pooled.to(self.dtype)
        return e

    def pooled(self, prompt: str) -> torch.Tensor | None:
        """SDXL's pooled text embedding for ``prompt`` [Dp]; None for other models."""
        if not self.cond.xl:
            return None
        if prompt not in self._pooled:
            self.embed(prompt)
        return self._pooled[prompt]

    def use_embedding(self, prompt: str, embedding: torch.Tensor, pooled_of: str | None = None) -> None:
        """Take ``embedding`` [T, D] as the text encoder's output for ``prompt`` (analyses that edit
        the conditioning give each edit a name among the settings' prompts). SDXL: the pooled
        embedding is that of the prompt ``pooled_of`` (zeros when None)."""
        if embedding.shape != (self.seq_len, self.cond.width):
            raise PlanError("embedding", f"expected [{self.seq_len}, {self.cond.width}], got {list(embedding.shape)}")
        self._emb[prompt] = embedding.to(self.device, self.dtype)
        if self.cond.xl:
            base = self.pooled(pooled_of) if pooled_of is not None else None
            self._pooled[prompt] = base if base is not None else embedding.new_zeros(self.cond.pooled_width)

    # ------------------------------------------------------------------ rendering
    def _frame_text(
        self, frames: Sequence[FrameSpec]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """Each frame's prompt mix → hidden rows [B, T, D], pooled rows [B, Dp] (SDXL; else None)
        and, per text-bend word, a [B, T] mask of where the word is in the frame's prompts."""
        P = len(self.prompts)
        embs = torch.stack([self.embed(p) for p in self.prompts])  # [P, T, D]
        pooled = torch.stack([self.pooled(p) for p in self.prompts]) if self.cond.xl else None  # [P, Dp]
        mixes = []
        for i, f in enumerate(frames):
            w = f.prompt_weights or (1.0,) + (0.0,) * (P - 1)
            if len(w) != P or not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
                raise PlanError(
                    f"frames[{i}].prompt_weights", f"expected {P} finite weights ≥ 0 with a positive sum, got {w}"
                )
            mixes.append(w)
        rows = torch.stack([_mix(embs, w) for w in mixes])
        pooled_rows = None if pooled is None else torch.stack([_mix(pooled, w) for w in mixes])
        nonzero = [[j for j, v in enumerate(w) if v > 0] for w in mixes]
        masks = {word: torch.stack([m[nz].any(0) for nz in nonzero]) for word, m in self._word_masks.items()}
        return rows, pooled_rows, masks

    def text_rows(self, frames: Sequence[FrameSpec], bend: bool = True, guided: bool | None = None) -> torch.Tensor:
        """The U-Net's text rows for ``frames``: [uncond; cond] with guidance, packed for the
        model (see :class:`TextConditioning`) → [2B or B, T(+1), D]. ``bend``: apply text bends
        (the engine must hold these frames' parameters); ``guided``: with the unguided half (None:
        as the render is)."""
        B = len(frames)
        cond, pooled, masks = self._frame_text(frames)
        if bend:
            cond = self.engine.bend_text(cond, "cond", masks)
        cond = self.cond.pack(cond, pooled)
        if not (self.guided if guided is None else guided):
            return cond
        negative = self.settings.negative_prompt
        unc = self.embed(negative).expand(B, -1, -1)
        unc_pooled = self.pooled(negative)
        if self.cond.zero_empty_negative and not negative:
            unc = torch.zeros_like(unc)
            unc_pooled = None if unc_pooled is None else torch.zeros_like(unc_pooled)
        if bend:
            unc = self.engine.bend_text(unc, "uncond", {w: torch.zeros_like(m) for w, m in masks.items()})
        unc = self.cond.pack(unc, None if unc_pooled is None else unc_pooled.expand(B, -1))
        return torch.cat([unc, cond])

    def unet_forward(self, inp: torch.Tensor, t: Any, text: torch.Tensor) -> torch.Tensor:
        """The U-Net's raw prediction for model inputs [R, C, h, w] and packed text rows [R, T(+1), D]."""
        return self.unet(inp, t, **self.cond.unet_kwargs(text)).sample

    def _noise(self, frames: Sequence[FrameSpec]) -> torch.Tensor:
        c = self.unet.config.in_channels
        shape = (c, self.height // self.vae_factor, self.width // self.vae_factor)
        out = []
        for i, f in enumerate(frames):
            if not math.isfinite(f.noise_angle):
                raise PlanError(f"frames[{i}].noise_angle", "must be finite (radians)")
            g = torch.Generator().manual_seed(int(f.seed if f.seed is not None else self.settings.seed))
            n1 = torch.randn(shape, generator=g)
            if f.noise_angle != 0.0:
                n2 = torch.randn(shape, generator=g)
                n1 = math.cos(f.noise_angle) * n1 + math.sin(f.noise_angle) * n2
            out.append(n1)
        return torch.stack(out).to(self.device, self.dtype)

    @torch.no_grad()
    def render(self, frames: Sequence[FrameSpec]) -> list[FrameResult]:
        """Render ``frames`` in batches of at most ``max_batch``; results in input order."""
        out: list[FrameResult] = []
        for s in range(0, len(frames), self.config.max_batch):
            out.extend(self._render_batch(frames[s : s + self.config.max_batch]))
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _render_batch(self, frames: Sequence[FrameSpec]) -> list[FrameResult]:
        return self.finish(self.denoise(frames))

    @torch.no_grad()
    def denoise(self, frames: Sequence[FrameSpec]) -> Denoised:
        """The U-Net part of rendering ``frames`` (one batch, at most ``max_batch``): text, every
        denoising step with the bends, and the faults the bends raised. :meth:`finish` decodes it.
        Frames that start from noise and from pictures (at each start step) denoise in one pass per kind.

        A live server's lanes run this in parallel, each renderer on its own U-Net replica."""
        starts = [_start_of(f) for f in frames]
        kinds = list(dict.fromkeys(starts))
        if len(kinds) == 1:
            return self._denoise_alike(frames)
        latents: torch.Tensor | None = None
        faults: list[Fault] = []
        for kind in kinds:
            rows = [i for i, s in enumerate(starts) if s == kind]
            part = self._denoise_alike([frames[i] for i in rows])
            if latents is None:
                latents = part.latents.new_empty((len(frames), *part.latents.shape[1:]))
            latents[rows] = part.latents
            faults += [replace(f, frame=rows[f.frame]) for f in part.faults]
        assert latents is not None
        return Denoised(latents, faults)

    def _denoise_alike(self, frames: Sequence[FrameSpec]) -> Denoised:
        """:meth:`denoise` for frames that all start alike (from noise, or from pictures at one step)."""
        eng = self.engine
        eng.set_frames([f.params for f in frames], guided=self.guided)
        t0 = time.perf_counter()
        text = self.text_rows(frames)
        self._sync()
        t1 = time.perf_counter()
        latents = self._denoise_steps(frames, text)
        latents = eng.bend_latent(latents, self.steps, "frames")
        self._sync()
        self.timings["text"] += t1 - t0
        self.timings["denoise"] += time.perf_counter() - t1
        return Denoised(latents, eng.faults())

    def _denoise_steps(self, frames: Sequence[FrameSpec], text: torch.Tensor) -> torch.Tensor:
        """Every denoising step (the shared prefix from the cache) → latents [B, C, h, w]."""
        eng = self.engine
        sharing = None
        if frames[0].start_latent is not None:  # inverted pictures, all from one start step (see denoise)
            if self.config.scheduler not in ("default", "ddim"):
                raise PlanError(
                    "scheduler", f"starting from a picture needs ddim (its inversion's), not {self.config.scheduler}"
                )
            sched, first = ddim_scheduler(self.scheduler, self.steps, self.device), frames[0].start_step
            latents = torch.stack([f.start_latent for f in frames]).to(self.device, self.dtype)
        else:
            sched = make_scheduler(self.scheduler, "default")
            sched.set_timesteps(self.steps, device=self.device)
            first = self.prefix_steps
            keys = [
                (f.seed if f.seed is not None else self.settings.seed, float(f.noise_angle), f.prompt_weights)
                for f in frames
            ]
            if first > 0:
                latents, sched = self.prefix.latents(
                    keys, lambda rows: self._run_prefix(frames, rows, text, sched, first)
                )
            else:
                latents = self._noise(frames) * sched.init_noise_sigma
            if self.split is not None and first < self.steps:
                sharing = row_sharing(keys, self.guided, self.device)
        noise = self._step_noise(sched, frames)
        with install_hooks(self.unet, eng):
            for i, t in enumerate(sched.timesteps[first:], start=first):
                latents = eng.bend_latent(latents, i, "frames")
                inp = torch.cat([latents, latents]) if self.guided else latents
                inp = eng.bend_latent(inp, i, "guided") if self.guided else inp
                if i == first and sharing is not None:
                    pred = self._guided_shared(sched.scale_model_input(inp, t), t, text, sharing)
                else:
                    pred = self._guided(sched.scale_model_input(inp, t), t, text)
                latents = sched.step(pred, t, latents, **noise).prev_sample
        return latents

    def _step_noise(self, sched: Any, frames: Sequence[FrameSpec]) -> dict[str, Any]:
        """``sched.step``'s noise source for schedulers that add noise as they step (ancestral
        Euler, LCM, DDPM): one generator per frame, seeded from the frame's seed, so a frame's
        noise is the same alone or in any batch. Empty for schedulers without a generator."""
        if "generator" not in inspect.signature(sched.step).parameters:
            return {}
        seeds = [f.seed if f.seed is not None else self.settings.seed for f in frames]
        return {"generator": [torch.Generator().manual_seed(_STEP_NOISE_STREAM ^ int(s)) for s in seeds]}

    @torch.no_grad()
    def finish(self, denoised: Denoised) -> list[FrameResult]:
        """Decode a :meth:`denoise` result → one result per frame (image, NaN/black flags, faults).
        Touches only the VAE, so it may run while another thread denoises the next batch."""
        t0 = time.perf_counter()
        images, nonfinite = self.decode(denoised.latents)
        self.timings["decode"] += time.perf_counter() - t0
        results = []
        for i in range(len(images)):
            img = images[i]
            black = bool(img.mean() < 4.0)
            faults = [f for f in denoised.faults if f.frame == i]
            results.append(FrameResult(img, bool(nonfinite[i]), black, faults))
        return results

    def _run_prefix(
        self, frames: Sequence[FrameSpec], rows: list[int], text: torch.Tensor, sched: Any, first: int
    ) -> tuple[torch.Tensor, Any]:
        """Unbent steps 0…first−1 for the frames at ``rows`` → their latents [R, C, h, w], scheduler."""
        txt = text.index_select(0, torch.tensor(guided_rows(rows, len(frames), self.guided), device=text.device))
        s = copy.deepcopy(sched)
        lat = self._noise([frames[r] for r in rows]) * s.init_noise_sigma
        for t in s.timesteps[:first]:
            pred = self._guided(s.scale_model_input(torch.cat([lat, lat]) if self.guided else lat, t), t, txt)
            lat = s.step(pred, t, lat).prev_sample
        return lat, s

    def _guided_shared(self, inp: torch.Tensor, t: Any, text: torch.Tensor, sharing: RowSharing) -> torch.Tensor:
        """``_guided`` computing the stages before the split point once per distinct row."""
        assert self.split is not None
        with widening(self.unet, self._stages, self.split, sharing):
            pred = self.unet_forward(inp.index_select(0, sharing.compute), t, text.index_select(0, sharing.compute))
        if pred.shape[0] != inp.shape[0]:  # the split stage never ran in this U-Net: compute every row
            return self._guided(inp, t, text)
        return self._guide(pred)

    def _guided(self, inp: torch.Tensor, t: Any, text: torch.Tensor) -> torch.Tensor:
        """U-Net prediction for the model input ([uncond; cond] rows with guidance), guided. -> [B, C, h, w]"""
        return self._guide(self.unet_forward(inp, t, text))

    def _guide(self, pred: torch.Tensor) -> torch.Tensor:
        """[uncond; cond] predictions [2B, C, h, w] → guided [B, C, h, w] (as is without guidance)."""
        if self.guided:
            pu, pc = pred.chunk(2)
            pred = pu + self.guidance * (pc - pu)
        return pred

    def decode(self, latents: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Latents [B, 4, h, w] → uint8 images [B, H, W, 3] and a per-frame non-finite flag [B]."""
        nonfinite = (~torch.isfinite(latents).flatten(1).all(1)).cpu().numpy()
        imgs = self.decode_levels(latents).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        imgs[nonfinite] = 0
        return imgs, nonfinite

    def decode_levels(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, 4, h, w] → float images [B, 3, H, W] in 0–255 levels, before rounding (NaN/inf
        latents decode as 0; :meth:`decode` rounds these to 8 bits)."""
        z = torch.nan_to_num(latents, nan=0.0, posinf=0.0, neginf=0.0).to(self.vae.dtype)
        vae_config = self.vae.config
        z = z / vae_config.scaling_factor + (getattr(vae_config, "shift_factor", None) or 0.0)
        x = self.vae.decode(z).sample.float()
        x = torch.nan_to_num(x, nan=-1.0).clamp(-1, 1)
        return (x + 1) * 127.5


_STEP_NOISE_STREAM = 0x5EED_5CED  # keeps step noise apart from the start noise of the same seed


def _mix(rows: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """The prompt mix of per-prompt rows [P, ...] with ``weights`` (≥ 0, positive sum): a single
    prompt's row as it is, else the weighted mean computed in float32."""
    nonzero = [j for j, v in enumerate(weights) if v > 0]
    if len(nonzero) == 1:
        return rows[nonzero[0]]
    wt = torch.tensor(weights, device=rows.device, dtype=torch.float32) / sum(weights)
    return torch.einsum("p,p...->...", wt, rows.float()).to(rows.dtype)


def _start_of(frame: FrameSpec) -> int | None:
    """The step a frame's denoising starts at from a picture, None for a frame that starts from noise."""
    return frame.start_step if frame.start_latent is not None else None
