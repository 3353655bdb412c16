"""Scheduler choice by name. Each render batch gets a fresh scheduler (some keep state)."""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEDULERS", "make_scheduler"]

SCHEDULERS = ("default", "ddim", "euler", "dpm", "pndm")


def make_scheduler(base: Any, name: str = "default") -> Any:
    """A new scheduler of kind ``name`` built from ``base``'s config (prediction type, betas…).

    ``default`` keeps the model folder's own scheduler class.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

    classes = {"default": type(base), "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
               "dpm": DPMSolverMultistepScheduler, "pndm": PNDMScheduler}
    if name not in classes:
        raise ValueError(f"scheduler: unknown {name!r}; allowed: {', '.join(SCHEDULERS)}")
    return classes[name].from_config(base.config)
