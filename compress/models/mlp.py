"""Plain multilayer perceptron: the simplest baseline for pruning and quantization."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from compress.errors import ConfigError
from compress.models.base import ModelConfig
from compress.models.options import positive_ints


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


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """Configurable MLP on the flattened input."""

    name: ClassVar[str] = "mlp"

    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "hidden", positive_ints("mlp", "hidden", self.hidden, allow_empty=True)
        )
        dropout = self.dropout
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise ConfigError(f"model 'mlp': dropout must be a number in [0, 1), got {dropout!r}")
        if not isinstance(self.batch_norm, bool):
            raise ConfigError(
                f"model 'mlp': batch_norm must be true or false, got {self.batch_norm!r}"
            )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return mlp_stack(
            math.prod(input_shape),
            self.hidden,
            num_classes,
            dropout=float(self.dropout),
            batch_norm=self.batch_norm,
        )
