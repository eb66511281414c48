"""Plain multilayer perceptron: the simplest baseline for pruning and quantization."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from compress.errors import ConfigError
from compress.models.registry import positive_ints, register


def mlp_stack(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Flatten -> [Linear -> (BN) -> ReLU -> (Dropout)]* -> Linear.

    BN sits right after its Linear so the pair can be fused for quantization; the Linear
    then needs no bias of its own.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for out in hidden:
        layers.append(nn.Linear(width, out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(out))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = out
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    """Configurable MLP on the flattened input."""
    sizes = positive_ints("mlp", "hidden", hidden, allow_empty=True)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"model 'mlp': dropout must be a number in [0, 1), got {dropout!r}")
    if not isinstance(batch_norm, bool):
        raise ConfigError(f"model 'mlp': batch_norm must be true or false, got {batch_norm!r}")
    return mlp_stack(
        math.prod(input_shape), sizes, num_classes, dropout=float(dropout), batch_norm=batch_norm
    )
