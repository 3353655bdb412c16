"""The scene classifier: probabilities of foreground colour, shape and background colour of an image.

A small convolutional network trained on ground-truth renders of the scene grammar
(:mod:`bendbridge.server.embedded.scenes`), blurred and jittered so that it also reads the soft
images a diffusion model draws (``tools/train_scene_classifier.py``; its measured accuracy is in
``model/classifier/training.json``). It is the judge of the steering and patching experiments on
the embedded model: "how red is this image", "how much of the star came back".

>>> probs = load_classifier().probabilities(images)   # images [N, H, W, 3] uint8
>>> probs["fg"].shape, probs["shape"].shape, probs["bg"].shape
((N, 12), (N, 8), (N, 13))
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .scenes import COLOURS, NOVEL_COLOURS, NOVEL_SHAPES, NOVEL_STYLES, SHAPES, STYLES

__all__ = [
    "ATTRIBUTES",
    "LABELS",
    "CONCEPT_LABELS",
    "CLASSIFIER_DIR",
    "CONCEPT_JUDGE_DIR",
    "SceneClassifier",
    "load_classifier",
    "load_concept_judge",
    "scene_labels",
]

#: attribute -> class names, in the order of the network's outputs; "none" is the night sky's background
LABELS: dict[str, tuple[str, ...]] = {
    "fg": tuple(COLOURS),
    "shape": SHAPES,
    "bg": (*COLOURS, "none"),
}
ATTRIBUTES = tuple(LABELS)
#: the concept judge's classes: the scene classifier's, plus the concepts the model never saw
#: (``scenes.NOVEL_*``), with the background's style instead of its colour
CONCEPT_LABELS: dict[str, tuple[str, ...]] = {
    "fg": (*COLOURS, *NOVEL_COLOURS),
    "shape": (*SHAPES, *NOVEL_SHAPES),
    "style": (*STYLES, *NOVEL_STYLES),
}
CLASSIFIER_DIR = Path(__file__).resolve().parent / "model" / "classifier"
CONCEPT_JUDGE_DIR = Path(__file__).resolve().parent / "model" / "concept_judge"
INPUT_SIZE = 64


class SceneClassifier(nn.Module):
    """[N, 3, 64, 64] images in [-1, 1] → logits per attribute of ``labels`` (default
    :data:`LABELS`: {"fg": [N, 12], "shape": [N, 8], "bg": [N, 13]})."""

    def __init__(self, width: int = 64, labels: dict[str, tuple[str, ...]] | None = None):
        super().__init__()
        self.labels = dict(labels or LABELS)
        w = width
        layers: list[nn.Module] = []
        for c_in, c_out, stride in (
            (3, w // 2, 2),
            (w // 2, w, 2),
            (w, w, 1),
            (w, 3 * w // 2, 2),
            (3 * w // 2, 3 * w // 2, 2),
        ):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)  # -> [N, 1.5w, 4, 4]
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(3 * w // 2 * 16, 128), nn.ReLU(), nn.Dropout(0.1))
        self.heads = nn.ModuleDict({k: nn.Linear(128, len(v)) for k, v in self.labels.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.hidden(self.features(x))
        return {k: head(h) for k, head in self.heads.items()}

    @staticmethod
    def prepare(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images [N, H, W, 3] → the network's input [N, 3, 64, 64] in [-1, 1]."""
        x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Class probabilities of uint8 images [N, H, W, 3]: {attribute: [N, classes]} (rows sum to 1)."""
        self.eval()
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.labels}
        for s in range(0, len(images), batch):
            logits = self(self.prepare(images[s : s + batch]))
            for k, v in logits.items():
                out[k].append(torch.softmax(v.float(), -1).numpy())
        return {k: np.concatenate(v) if v else np.zeros((0, len(self.labels[k])), np.float32) for k, v in out.items()}

    def predict(self, images: np.ndarray) -> list[dict[str, str]]:
        """The most probable class of each attribute, per image."""
        probs = self.probabilities(images)
        return [{k: v[int(probs[k][i].argmax())] for k, v in self.labels.items()} for i in range(len(images))]


def scene_labels(scene, labels: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """Class indices of a :class:`~bendbridge.server.embedded.scenes.Scene` for ``labels`` (default
    :data:`LABELS`; the sun of a sea is a circle, a night sky's background is "none")."""
    value = {"fg": scene.fg, "shape": scene.shape, "bg": scene.bg or "none", "style": scene.style}
    return {k: v.index(value[k]) for k, v in (labels or LABELS).items()}


@lru_cache(maxsize=4)
def load_classifier(folder: Path = CLASSIFIER_DIR) -> SceneClassifier:
    """The trained classifier shipped with the embedded model (CPU, fp32, eval mode)."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    labels = {k: tuple(v) for k, v in config.get("labels", LABELS).items()}
    model = SceneClassifier(width=int(config["width"]), labels=labels)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(folder / "model.safetensors").items()}
    model.load_state_dict(state)
    return model.eval()


def load_concept_judge() -> SceneClassifier:
    """The judge of the personal-adapter experiments: :data:`CONCEPT_LABELS` (foreground colour,
    shape and background style, novel concepts included)."""
    return load_classifier(CONCEPT_JUDGE_DIR)
