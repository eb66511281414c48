"""Where each int8 backend writes its converted model into an artifact, and reads it back.

A method that converts a model records a recipe (plain values) whose `backend` names a
module here; that module has

- `portable_state(model) -> (tensors, extra)`: the converted model's tensors (plain or
  torch-quantized) by name, and plain values (numbers, strings, lists, dicts) it needs;
- `rebuild(float_model, recipe, tensors, extra, input_shape) -> nn.Module`: the converted
  model again, from a freshly built float model of the recorded structure (a backend that
  stores its whole program may ignore it).

The artifact writer stores tensors in its own compact encodings and the rest as is; no
backend pickles code.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: backend name -> the module that saves and rebuilds its models.
BACKENDS = {
    "pt2e": "compress.quant.pt2e_state",
    "torchao_linear": "compress.quant.linear",
    "eager_dynamic": "compress.quant.eager_rnn",
}


def codec(backend: str) -> ModuleType:
    """The module that saves and rebuilds models of `backend` (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(
            f"int8 backend '{backend}' is not one this release reads "
            f"(known: {', '.join(sorted(BACKENDS))})"
        )
    return importlib.import_module(BACKENDS[backend])
