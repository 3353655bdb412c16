"""Network-bending operators: pure, batched functions on tensors, reached by name.

>>> from server.operators import get_operator
>>> get_operator("rotate_plane").params["angle"].describe_range()
'[-25.1327, 25.1327]'
"""

from . import channel, pointwise, spatial  # noqa: F401  (register the families)
from .spec import OPERATORS, OperatorError, OperatorSpec, ParamSpec, get_operator, operator_names, suggest

__all__ = ["OPERATORS", "OperatorError", "OperatorSpec", "ParamSpec", "get_operator", "operator_names", "suggest"]
