"""`method=prune`: unstructured L1-magnitude pruning, global or per layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.config import require
from compress.errors import ConfigError
from compress.methods.base import MethodConfig, register_method
from compress.methods.masks import MaskSet, magnitude_masks, prunable_weights

SCOPES = ("global", "layer")


@dataclass(frozen=True)
class MagnitudePruning(MethodConfig):
    """Remove the `amount` share of conv/linear weights with the smallest magnitude."""

    name = "prune"
    amount: float = 0.8
    scope: str = "global"

    def __post_init__(self) -> None:
        require(
            isinstance(self.amount, int | float) and 0 <= self.amount < 1,
            f"method.amount must be in [0, 1), got {self.amount}",
        )
        require(
            self.scope in SCOPES,
            f"method.scope '{self.scope}' unknown; choose one of: {', '.join(SCOPES)}",
        )


class MaskedStage:
    """Holds pruned weights at zero through fine-tuning; finalize drops the masks."""

    def __init__(self, masks: MaskSet) -> None:
        self.masks = masks

    def after_step(self) -> None:
        self.masks.apply()

    def finalize(self, model: nn.Module) -> nn.Module:
        # The masks are already multiplied into the weights; what remains is a plain
        # model whose zeros the artifact writer stores sparsely.
        self.masks.apply()
        return model

    def summary(self) -> dict[str, float]:
        return {"sparsity": self.masks.sparsity()}


@register_method(MagnitudePruning)
def prune_by_magnitude(model: nn.Module, config: MagnitudePruning) -> MaskedStage:
    weights = prunable_weights(model)
    if not weights:
        raise ConfigError("method 'prune': the model has no conv or linear layer to prune")
    return MaskedStage(MaskSet(weights, magnitude_masks(weights, config.amount, config.scope)))
