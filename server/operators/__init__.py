"""Network-bending operators: pure, batched torch functions implementing the operator catalogue.

>>> from bendbridge.server.operators import get_operator
>>> get_operator("rotate_plane").spec.params["angle"].describe_range()
'[-25.1327, 25.1327]'
"""

from bendbridge.protocol.operators import OperatorError

from . import adapters, channel, pointwise, spatial, steering, text_pca  # noqa: F401  (implement the families)
from .spec import FileContext, Operator, OperatorFn, Resource, check_implementations, get_operator, implements

check_implementations()

__all__ = ["FileContext", "Operator", "OperatorError", "OperatorFn", "Resource", "get_operator", "implements"]
