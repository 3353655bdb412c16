"""Activation patching: which module, at which denoising steps, carries a concept.

Render a *clean* prompt ("a red star …") and a *corrupt* one ("a blue star …") from the same
noise. Then render the corrupt prompt again once per (target module, step range), with that
module's output replaced by the clean run's during those steps, and measure how much of the clean
concept returns (Meng et al., "Locating and Editing Factual Associations in GPT", 2022; for
diffusion U-Nets: Basu et al., "Localizing and Editing Knowledge in Text-to-Image Generative
Models", ICLR 2024)::

    restored = (m(patched) − m(corrupt)) / (m(clean) − m(corrupt))      1 = fully restored, 0 = no effect

Metrics ``m``: ``colour``, ``shape``, ``background`` — the embedded scene classifier's
log-probability of the clean image's class minus that of the corrupt image's; for any model,
``latent`` and ``pixels`` — minus the distance to the clean run's final latent or image — and
``mean-colour`` — minus the distance between mean colours; ``pixels`` and ``mean-colour`` may be
limited to a ``region`` (x0, y0, x1, y1 as fractions of the image), e.g. where the subject is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RenderSettings

from .probes import default_targets, probing, resolve_targets, step_range

__all__ = ["METRICS", "PatchRequest", "PatchMap", "patch_map", "rank_correlation"]

CLASSIFIER_METRICS = {"colour": "fg", "shape": "shape", "background": "bg"}
METRICS = (*CLASSIFIER_METRICS, "latent", "pixels", "mean-colour")


@dataclass(frozen=True)
class PatchRequest:
    """``bendbridge patch``'s question: prompts, metric, targets (None: every cross-attention layer
    and attention block), step ranges (None: from each step to the last, which shows until when
    patching still brings the concept back), seeds."""

    clean: str
    corrupt: str
    metric: str = "colour"
    targets: tuple[str, ...] | None = None
    steps: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    region: tuple[float, float, float, float] | None = None

    def check(self) -> None:
        if self.metric not in METRICS:
            raise BendbridgeError("--metric", f"{self.metric!r} is not valid; allowed: {', '.join(METRICS)}")
        for name in ("clean", "corrupt"):
            if not getattr(self, name).strip():
                raise BendbridgeError(f"--{name}", "expected a prompt")
        if self.clean == self.corrupt:
            raise BendbridgeError("--corrupt", "is the clean prompt; patching needs two prompts that differ")
        if self.region is not None and self.metric not in ("pixels", "mean-colour"):
            raise BendbridgeError("--region", f"limits the pixels and mean-colour metrics, not {self.metric!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise BendbridgeError("--seeds", "expected one or more distinct seeds")


@dataclass
class PatchMap:
    """Restored fraction per seed, target and step range: ``values`` [seeds, targets, columns]."""

    request: PatchRequest
    model: str
    targets: list[str]
    columns: list[str]
    values: np.ndarray
    clean_score: list[float] = field(default_factory=list)
    corrupt_score: list[float] = field(default_factory=list)

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(0)

    def seed_agreement(self, pearson: bool = False) -> float | None:
        """Mean Spearman rank (or Pearson) correlation of the maps of every pair of seeds (None with one seed)."""
        n = len(self.values)
        corr = _pearson if pearson else rank_correlation
        pairs = [corr(self.values[i], self.values[j]) for i in range(n) for j in range(i + 1, n)]
        return float(np.mean(pairs)) if pairs else None

    def top(self, n: int = 3) -> list[tuple[str, str, float]]:
        """The ``n`` (target, step range, restored) cells that restore most, best first."""
        m = self.mean
        order = np.argsort(-m, axis=None)[:n]
        return [(self.targets[i // m.shape[1]], self.columns[i % m.shape[1]], float(m.flat[i])) for i in order]

    def to_json(self) -> dict:
        r = self.request
        return {
            "model": self.model,
            "clean": r.clean,
            "corrupt": r.corrupt,
            "metric": r.metric,
            "seeds": list(r.seeds),
            "targets": self.targets,
            "columns": self.columns,
            "restored_mean": np.round(self.mean, 4).tolist(),
            "restored_per_seed": np.round(self.values, 4).tolist(),
            "clean_score": self.clean_score,
            "corrupt_score": self.corrupt_score,
            "seed_rank_correlation": self.seed_agreement(),
            "seed_pearson_correlation": self.seed_agreement(pearson=True),
            "top": [{"target": t, "steps": c, "restored": round(v, 4)} for t, c, v in self.top(5)],
        }

    def save(self, png: Path) -> Path:
        """Write the heatmap to ``png`` and the numbers beside it (``.json``); returns the JSON path."""
        from .figures import patch_heatmap

        png.parent.mkdir(parents=True, exist_ok=True)
        patch_heatmap(self, png)
        out = png.with_suffix(".json")
        out.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ of two equally shaped arrays (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        flat = x.ravel()
        order = flat.argsort(kind="stable")
        r = np.empty(len(flat))
        r[order] = np.arange(len(flat))
        for v in np.unique(flat):  # ties share their mean rank
            tie = flat == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _columns(steps: Sequence[str] | None, num_steps: int) -> tuple[list[str], list[tuple[int, int]]]:
    texts = list(steps) if steps else [f"{s}-{num_steps - 1}" for s in range(num_steps)]
    ranges = [step_range(t, num_steps) for t in texts]
    labels = [f"{a}-{b}" if a != b else str(a) for a, b in ranges]
    labels = ["all" if t == "all" else lab for t, lab in zip(texts, labels)]
    return labels, ranges


def _scorer(
    metric: str,
    clean: tuple[np.ndarray, torch.Tensor],
    corrupt: tuple[np.ndarray, torch.Tensor],
    region: tuple[float, float, float, float] | None = None,
) -> Callable:
    """``score(images [N, H, W, 3], latents [N, ...]) -> [N]``, higher = closer to the clean run.

    Classifier metrics score the log-probability difference between the clean image's class and
    the corrupt image's (the "logit difference" of the patching literature), which stays graded
    where the probabilities themselves saturate at 0 and 1."""
    clean_image, clean_latent = clean
    if metric in CLASSIFIER_METRICS:
        from bendbridge.server.embedded.classifier import load_classifier

        clf, attr = load_classifier(), CLASSIFIER_METRICS[metric]
        want = int(clf.probabilities(clean_image[None])[attr][0].argmax())
        away = int(clf.probabilities(corrupt[0][None])[attr][0].argmax())
        if want == away:
            raise BendbridgeError(
                "--corrupt", f"the classifier reads the same {metric} in both renders; choose prompts that differ in it"
            )

        def score(images: np.ndarray, latents: torch.Tensor) -> np.ndarray:
            logp = np.log(np.clip(clf.probabilities(images)[attr], 1e-12, 1.0))
            return logp[:, want] - logp[:, away]

        return score
    if metric == "latent":
        ref = clean_latent.float().flatten()
        return lambda images, latents: -(latents.float().flatten(1) - ref).norm(dim=1).numpy()
    crop = _crop(region)
    if metric == "mean-colour":
        ref_rgb = crop(clean_image[None]).reshape(-1, 3).mean(0)
        return lambda images, latents: (
            -np.linalg.norm(crop(images).reshape(len(images), -1, 3).mean(1) - ref_rgb, axis=1)
        )
    ref_img = crop(clean_image[None]).astype(np.float32).reshape(1, -1)
    return lambda images, latents: (
        -np.sqrt(((crop(images).reshape(len(images), -1).astype(np.float32) - ref_img) ** 2).mean(1))
    )


def _crop(region: tuple[float, float, float, float] | None) -> Callable[[np.ndarray], np.ndarray]:
    """Images [N, H, W, 3] → the region's pixels [N, h, w, 3] (the whole image without a region)."""
    if region is None:
        return lambda images: images
    x0, y0, x1, y1 = region

    def crop(images: np.ndarray) -> np.ndarray:
        h, w = images.shape[1:3]
        return images[
            :, int(y0 * h) : max(int(y0 * h) + 1, round(y1 * h)), int(x0 * w) : max(int(x0 * w) + 1, round(x1 * w))
        ]

    return crop


def _patcher(ti: int, target: str, chunk: list[tuple[int, int]], ranges, stored) -> Callable:
    """The probe of ``target`` for one batch: frame j of ``chunk`` (target index, range index)
    takes the clean run's activation (both guidance halves) at the steps of its range."""
    b = len(chunk)

    def probe(step: int, x: torch.Tensor) -> torch.Tensor | None:
        rows = [j for j, (t, c) in enumerate(chunk) if t == ti and ranges[c][0] <= step <= ranges[c][1]]
        if not rows:
            return None
        x = x.clone()
        clean = stored[(target, step)]  # [1 or 2, C, H, W]: (uncond,) cond of the clean frame
        for j in rows:
            for half in range(len(clean)):
                x[half * b + j] = clean[half]
        return x

    return probe


@torch.no_grad()
def _one_seed(renderer, targets, ranges, metric, seed, progress, region=None) -> tuple[np.ndarray, float, float]:
    from bendbridge.server.render import FrameSpec

    clean_f, corrupt_f = (FrameSpec.of_prompt(i, 2, seed=seed) for i in range(2))
    stored: dict[tuple[str, int], torch.Tensor] = {}

    def recorder(name: str):
        return lambda step, x: stored.__setitem__((name, step), x.clone())

    with probing(renderer, [(t, recorder(t)) for t in targets]):
        d = renderer.denoise([clean_f])
    clean = (renderer.finish(d)[0].image, d.latents[0])
    d = renderer.denoise([corrupt_f])
    corrupt = (renderer.finish(d)[0].image, d.latents[0])
    score = _scorer(metric, clean, corrupt, region)
    m_clean = float(score(clean[0][None], clean[1][None])[0])
    m_corrupt = float(score(corrupt[0][None], corrupt[1][None])[0])
    jobs = [(ti, ci) for ti in range(len(targets)) for ci in range(len(ranges))]
    out = np.zeros((len(targets), len(ranges)))
    for s in range(0, len(jobs), renderer.config.max_batch):
        chunk = jobs[s : s + renderer.config.max_batch]
        b = len(chunk)
        probes = [(t, _patcher(ti, t, chunk, ranges, stored)) for ti, t in enumerate(targets)]
        with probing(renderer, probes):
            d = renderer.denoise([corrupt_f] * b)
        scores = score(np.stack([r.image for r in renderer.finish(d)]), d.latents)
        for (ti, ci), v in zip(chunk, scores):
            out[ti, ci] = v
        progress(b)
    den = m_clean - m_corrupt
    if abs(den) < 1e-6:
        raise BendbridgeError(
            "--corrupt",
            f"the clean and corrupt renders score the same on {metric!r} ({m_clean:.3f}); "
            "choose prompts that differ in it",
        )
    return (out - m_corrupt) / den, m_clean, m_corrupt


def patch_map(
    model,
    request: PatchRequest,
    *,
    settings: RenderSettings | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> PatchMap:
    """Run the patching experiment of ``request`` on ``model`` (a LoadedModel)."""
    from bendbridge.server.render import RenderConfig, Renderer

    request.check()
    base = settings or RenderSettings((request.clean,))
    renderer = Renderer(
        model, RenderConfig(replace(base, prompts=(request.clean, request.corrupt)), share_prefix=False)
    )
    layers = renderer.layers
    infos = (
        resolve_targets(request.targets, layers, unet=renderer.unet)
        if request.targets
        else default_targets(renderer.unet)
    )
    targets = [i.name for i in infos]
    labels, ranges = _columns(request.steps, renderer.steps)
    maps, cleans, corrupts = [], [], []
    for seed in request.seeds:
        m, c, k = _one_seed(renderer, targets, ranges, request.metric, seed, progress, request.region)
        maps.append(m)
        cleans.append(round(c, 4))
        corrupts.append(round(k, 4))
    return PatchMap(request, model.base_name, targets, labels, np.stack(maps), cleans, corrupts)
