"""Unstructured pruning: `method=prune` (magnitude or random) and `method=prune_nm` (N:M).

Both zero individual weights through masks that fine-tuning holds at zero; the saved
artifact stores the survivors sparsely, so the file shrinks. Dense kernels still run
every multiply: on a CPU the model is smaller, not faster (N:M is fast only on GPUs
with sparse tensor cores).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.config import require
from compress.errors import ConfigError
from compress.methods.base import MethodConfig, MethodContext, Stage, StageBase
from compress.methods.masks import (
    MaskSet,
    layer_amounts,
    matching,
    n_of_m_mask,
    prunable_weights,
    unstructured_masks,
)

log = logging.getLogger(__name__)

SCOPES = ("global", "layer")
CRITERIA = ("magnitude", "random")


def _check_amount(amount: float, option: str = "method.amount") -> None:
    require(0 <= amount < 1, f"{option} must be in [0, 1), got {amount}")


@dataclass(frozen=True)
class UnstructuredPruning(MethodConfig):
    """Remove the `amount` share of conv/linear weights with the lowest score.

    `layers` gives some layers an amount of their own (glob patterns on module paths,
    e.g. `{"fc3": 0.74}`; numeric paths of nn.Sequential may come as ints from the
    command line); `exclude` leaves layers dense (e.g. `["classifier"]`).
    """

    name = "prune"
    sparsifies = True
    accepts = ("layers",)  # per-layer amounts found by `analysis=sensitivity`
    amount: float = 0.8
    scope: str = "global"
    criterion: str = "magnitude"
    layers: dict[str | int, float] | None = None
    exclude: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        _check_amount(self.amount)
        require(
            self.scope in SCOPES,
            f"method.scope '{self.scope}' unknown; choose one of: {', '.join(SCOPES)}",
        )
        require(
            self.criterion in CRITERIA,
            f"method.criterion '{self.criterion}' unknown; choose one of: {', '.join(CRITERIA)}",
        )
        object.__setattr__(self, "layers", {str(k): v for k, v in (self.layers or {}).items()})
        for pattern, amount in self.layers.items():
            _check_amount(amount, f"method.layers['{pattern}']")

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return prune_unstructured(model, self, context)


@dataclass(frozen=True)
class NofMPruning(MethodConfig):
    """Keep `n` of every `m` consecutive weights along each output's inputs (2:4 by default).

    Layers whose input size is not a multiple of `m` stay dense (listed in the log and
    the per-layer table) unless `strict`, which makes them an error.
    """

    name = "prune_nm"
    sparsifies = True
    n: int = 2
    m: int = 4
    exclude: tuple[str, ...] = ()
    strict: bool = False

    def __post_init__(self) -> None:
        require(self.m >= 2, f"method.m must be >= 2, got {self.m}")
        require(1 <= self.n < self.m, f"method.n must be in [1, m), got {self.n}")

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return prune_n_of_m(model, self, context)


class MaskedStage(StageBase):
    """Masks recomputed at each `update`, re-applied after every optimizer step."""

    def __init__(
        self,
        weights: dict[str, nn.Parameter],
        compute: Callable[[float], dict[str, torch.Tensor]],
    ) -> None:
        self.masks = MaskSet(weights)
        self._compute = compute

    def update(self, progress: float) -> bool:
        self.masks.set(self._compute(progress))
        return False

    def after_step(self) -> None:
        self.masks.apply()

    def decisions(self) -> dict[str, torch.Tensor]:
        return dict(self.masks.masks)

    def finalize(self, model: nn.Module) -> nn.Module:
        # Masks are already multiplied into the weights; what remains is a plain model
        # whose zeros the artifact writer stores sparsely.
        self.masks.apply()
        return model

    def summary(self) -> dict[str, float]:
        return {"sparsity": self.masks.sparsity()}

    def artifacts(self, folder: Path) -> list[Path]:
        return [self.masks.write_table(folder / "layer_sparsity.csv")]


def _weights(model: nn.Module, method: str) -> dict[str, nn.Parameter]:
    weights = prunable_weights(model)
    if not weights:
        raise ConfigError(f"method '{method}': the model has no conv or linear layer to prune")
    return weights


def prune_unstructured(
    model: nn.Module, config: UnstructuredPruning, context: MethodContext
) -> MaskedStage:
    weights = _weights(model, config.name)
    own, pool = layer_amounts(list(weights), config.amount, config.layers, config.exclude)
    fixed_scores: dict[str, torch.Tensor] = {}
    if config.criterion == "random":
        # Drawn once: masks stay nested as the amount grows over a schedule.
        generator = torch.Generator().manual_seed(config.seed)
        fixed_scores = {
            p: torch.rand(w.shape, generator=generator).to(w.device) for p, w in weights.items()
        }

    def compute(progress: float) -> dict[str, torch.Tensor]:
        # Magnitude: pruned weights are zero, so they stay pruned as the amount grows.
        scores = fixed_scores or {p: w.detach().abs() for p, w in weights.items()}
        scaled = {p: a * progress for p, a in own.items()}
        return unstructured_masks(scores, scaled, pool, config.amount * progress, config.scope)

    return MaskedStage(weights, compute)


def prune_n_of_m(model: nn.Module, config: NofMPruning, context: MethodContext) -> MaskedStage:
    weights = _weights(model, config.name)
    excluded = {
        p for pattern in config.exclude for p in matching(list(weights), pattern, "method.exclude")
    }
    misfits = [p for p, w in weights.items() if w[0].numel() % config.m and p not in excluded]
    if misfits and config.strict:
        raise ConfigError(
            f"method 'prune_nm': inputs per output of {', '.join(misfits)} are not a multiple "
            f"of m={config.m}; add them to method.exclude"
        )
    if misfits:
        log.info("prune_nm: %s stay dense (inputs not a multiple of %d)", misfits, config.m)
    chosen = [p for p in weights if p not in excluded and p not in misfits]

    def compute(progress: float) -> dict[str, torch.Tensor]:
        # N:M has one sparsity (1 - n/m); a schedule can only switch it on.
        if progress <= 0:
            return {}
        return {p: n_of_m_mask(weights[p], config.n, config.m) for p in chosen}

    return MaskedStage(weights, compute)
