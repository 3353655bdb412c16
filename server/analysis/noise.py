"""Noise-to-image scores (``bendbridge analyse noise``): how much the start noise changes how well a
picture matches its prompt. Each prompt is rendered from ``seeds`` start noises (seeds 0 … N−1) and
every picture is scored; the figure draws each prompt's running mean over the seeds with ±1
standard deviation, so one sees both where the score settles and how widely single seeds scatter.

The score is the CLIP score (100 × the cosine similarity of CLIP's image and text embeddings, as
torchmetrics' ``CLIPScore`` computes it) when a local CLIP folder is given; on the embedded model
without one, it is the scene classifier's probability of what the prompt names (its foreground
colour, shape and background colour, averaged over those it names).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bendbridge.bridge.report import pyplot
from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

__all__ = ["NoiseScores", "noise_scores", "noise_figure", "prompt_labels", "classifier_scorer", "clip_scorer"]

Scorer = Callable[[np.ndarray, str], np.ndarray]  # pictures [N, H, W, 3] uint8, prompt → scores [N]


@dataclass
class NoiseScores:
    prompts: tuple[str, ...]
    scores: np.ndarray  # [P, N]
    score_name: str

    def running(self) -> tuple[np.ndarray, np.ndarray]:
        """Running mean and standard deviation over the first 1 … N seeds, [P, N] each."""
        n = np.arange(1, self.scores.shape[1] + 1)
        mean = np.cumsum(self.scores, 1) / n
        square = np.cumsum(self.scores**2, 1) / n
        return mean, np.sqrt(np.maximum(square - mean**2, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score_name,
            "seeds": int(self.scores.shape[1]),
            "prompts": [
                {"prompt": p, "mean": round(float(s.mean()), 4), "std": round(float(s.std()), 4),
                 "min": round(float(s.min()), 4), "max": round(float(s.max()), 4),
                 "scores": [round(float(v), 4) for v in s]}
                for p, s in zip(self.prompts, self.scores)
            ],
        }  # fmt: skip


def prompt_labels(prompt: str) -> dict[str, str]:
    """What an embedded-model prompt names, in the scene classifier's terms: ``fg`` (the colour
    before the shape), ``shape`` (a sun is a circle) and ``bg`` (the colour of the background or sea)."""
    from bendbridge.server.embedded.classifier import LABELS

    colours = "|".join(c for c in LABELS["fg"])
    shapes = "|".join((*LABELS["shape"], "sun"))
    out: dict[str, str] = {}
    m = re.search(rf"\b({colours})\s+(?:\w+\s+)?({shapes})\b", prompt)
    if m:
        out["fg"], out["shape"] = m[1], "circle" if m[2] == "sun" else m[2]
    else:
        shape = re.search(rf"\b({shapes})\b", prompt)
        if shape:
            out["shape"] = "circle" if shape[1] == "sun" else shape[1]
    bg = re.search(rf"\b(?:on|over)\s+an?\s+({colours})\b", prompt)
    if bg:
        out["bg"] = bg[1]
    return out


def classifier_scorer() -> Scorer:
    from bendbridge.server.embedded.classifier import LABELS, load_classifier

    classifier = load_classifier()

    def score(pictures: np.ndarray, prompt: str) -> np.ndarray:
        named = prompt_labels(prompt)
        if not named:
            raise BendbridgeError(
                "PROMPT", f"{prompt!r} names no colour or shape the scene classifier knows; give --clip DIR"
            )
        probs = classifier.probabilities(pictures)
        return np.mean([probs[k][:, LABELS[k].index(v)] for k, v in named.items()], axis=0)

    return score


def clip_scorer(folder: Path, device: torch.device) -> Scorer:
    """CLIP score with the CLIP model in ``folder`` (a transformers CLIPModel and its processor; no download)."""
    from transformers import CLIPModel, CLIPProcessor

    if not (folder / "config.json").is_file():
        raise BendbridgeError("--clip", f"{str(folder)!r} is not a CLIP model folder (no config.json)")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise BendbridgeError("--clip", f"{folder.name}: not a loadable CLIP model ({e})") from None

    @torch.no_grad()
    def score(pictures: np.ndarray, prompt: str) -> np.ndarray:
        inputs = processor(text=[prompt], images=list(pictures), return_tensors="pt", padding=True, truncation=True)
        out = model(**{k: v.to(device) for k, v in inputs.items()})
        img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return (100 * (img @ txt.T)[:, 0].clamp_min(0)).cpu().numpy()

    return score


def noise_scores(
    model: LoadedModel, prompts: tuple[str, ...], settings: RenderSettings, seeds: int, scorer: Scorer, name: str,
    batch: int = 8,
) -> NoiseScores:  # fmt: skip
    r = Renderer(model, RenderConfig(settings, max_batch=batch))
    scores = []
    for k, prompt in enumerate(prompts):
        frames = [FrameSpec.of_prompt(k, len(prompts), seed=s) for s in range(seeds)]
        pictures = np.stack([res.image for res in r.render(frames)])
        scores.append(scorer(pictures, prompt))
    return NoiseScores(prompts, np.stack(scores), name)


def noise_figure(ns: NoiseScores, png: Path) -> None:
    """Each prompt's running mean over the seeds, with a ±1 standard deviation band."""
    plt = pyplot("--out")
    mean, std = ns.running()
    n = np.arange(1, ns.scores.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    for p, m, s in zip(ns.prompts, mean, std):
        (line,) = ax.plot(n, m, label=p)
        ax.fill_between(n, m - s, m + s, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("seeds (start noises) so far")
    ax.set_ylabel(f"{ns.score_name}: running mean ± std")
    ax.set_title("how much the start noise changes how well the picture matches its prompt", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
