"""Module shapes that differ from a freshly built model (channels removed), and restoring them.

A model shrunk by structured pruning no longer matches what `build_model` makes from its
config. The artifact records, for each conv, linear and norm module whose shape-defining
attributes changed (and each attention module whose head count or head dim did), those
attributes as plain ints and lists; loading builds the model, `reshape`s the recorded
modules, then loads the weights as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

#: Attributes that fix the shapes of a module's parameters and buffers.
SHAPE_ATTRS = (
    "in_channels",
    "out_channels",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "num_groups",
    "num_channels",
    "normalized_shape",
    "num_heads",
    "head_dim",
)
SHAPED_TYPES = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)

Structure = dict[str, dict[str, Any]]


def _shaped(module: nn.Module) -> bool:
    """Layers with shaped parameters, and attention modules (their heads shape the forward)."""
    heads = isinstance(getattr(module, "num_heads", None), int)
    return isinstance(module, SHAPED_TYPES) or (
        heads and isinstance(getattr(module, "head_dim", None), int)
    )


def _plain(value: Any) -> int | list[int]:
    return [int(v) for v in value] if isinstance(value, tuple | list) else int(value)


def structure(model: nn.Module) -> Structure:
    """The shape-defining attributes of every conv, linear and norm module, by path."""
    return {
        path: {a: _plain(getattr(module, a)) for a in SHAPE_ATTRS if hasattr(module, a)}
        for path, module in model.named_modules()
        if _shaped(module)
    }


def changed_structure(model: nn.Module, reference: nn.Module) -> Structure:
    """The entries of `structure(model)` that differ from those of `reference`."""
    before = structure(reference)
    return {path: attrs for path, attrs in structure(model).items() if before.get(path) != attrs}


def reshape(model: nn.Module, changes: Mapping[str, Mapping[str, Any]], state: Mapping) -> None:
    """Give each module in `changes` its recorded attributes, and empty parameters and
    buffers shaped like their entries in `state` (ready for `load_state_dict`)."""
    modules = dict(model.named_modules())
    for path, attrs in changes.items():
        if path not in modules:
            raise ValueError(f"the artifact reshapes module '{path}', which the model lacks")
        module = modules[path]
        for name, value in attrs.items():
            setattr(module, name, tuple(value) if isinstance(value, list) else value)
        prefix = f"{path}." if path else ""
        for name, param in module._parameters.items():
            if param is not None and prefix + name in state:
                empty = torch.empty(state[prefix + name].shape, dtype=param.dtype)
                module._parameters[name] = nn.Parameter(empty, param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None and prefix + name in state:
                module._buffers[name] = torch.empty(state[prefix + name].shape, dtype=buffer.dtype)
