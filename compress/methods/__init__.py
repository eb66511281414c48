"""Compression methods: one module per method family, each defining its config plugins."""

from compress.methods.base import (
    MethodConfig,
    MethodContext,
    Stage,
    Step,
    apply_method,
    method_names,
    parse_method,
)
from compress.methods.stack import apply_steps

__all__ = [
    "MethodConfig",
    "MethodContext",
    "Stage",
    "Step",
    "apply_method",
    "apply_steps",
    "method_names",
    "parse_method",
]
