"""Scheduler choice by name. Each render batch gets a fresh scheduler (some keep state)."""

from __future__ import annotations

from typing import Any

from bendbridge.protocol.render import SCHEDULERS, check_scheduler

__all__ = ["SCHEDULERS", "make_scheduler"]


def make_scheduler(base: Any, name: str = "default") -> Any:
    """A new scheduler of kind ``name`` built from ``base``'s config (prediction type, betas…).

    ``default`` keeps the model folder's own scheduler class. ``euler-a`` and ``lcm`` add noise at
    each step; the renderer draws it from a generator per frame (deterministic, batch-independent).
    ``lcm`` is for latent-consistency models (LCM-distilled U-Nets or an LCM adapter).
    """
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        LCMScheduler,
        PNDMScheduler,
    )

    classes = {
        "default": type(base),
        "ddim": DDIMScheduler,
        "euler": EulerDiscreteScheduler,
        "euler-a": EulerAncestralDiscreteScheduler,
        "lcm": LCMScheduler,
        "dpm": DPMSolverMultistepScheduler,
        "pndm": PNDMScheduler,
    }
    check_scheduler(name)
    return classes[name].from_config(base.config)
