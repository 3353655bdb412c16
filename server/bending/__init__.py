"""Network bending: plans, targets, binding to a model, and the hook engine."""

from .binding import BoundBend, bind_plan
from .engine import BendEngine, Fault, FrameParamError, install_hooks
from .layers import LayerInfo, list_layers
from .plan import Bend, BendPlan, PlanError, Target, parse_spec

__all__ = ["Bend", "BendEngine", "BendPlan", "BoundBend", "Fault", "FrameParamError", "LayerInfo", "PlanError",
           "Target", "bind_plan", "install_hooks", "list_layers", "parse_spec"]
