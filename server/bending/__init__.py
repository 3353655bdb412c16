"""Network bending on a model: binding a plan to its layers, and the hook engine."""

from .binding import BoundBend, bind_plan
from .engine import BendEngine, Fault, FrameParamError, install_hooks
from .layers import LayerInfo, list_layers

__all__ = [
    "BendEngine",
    "BoundBend",
    "Fault",
    "FrameParamError",
    "LayerInfo",
    "bind_plan",
    "install_hooks",
    "list_layers",
]
