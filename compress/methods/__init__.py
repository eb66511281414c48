"""Compression methods. Importing this package registers every built-in method."""

from compress.methods import (  # noqa: F401  (registration side effects)
    channels,
    none,
    prune,
    quantize,
    stack,
    student,
    weights,
)
from compress.methods.base import (
    MethodConfig,
    MethodContext,
    Stage,
    apply_method,
    method_names,
    parse_method,
    register_method,
)

__all__ = [
    "MethodConfig",
    "MethodContext",
    "Stage",
    "apply_method",
    "method_names",
    "parse_method",
    "register_method",
]
