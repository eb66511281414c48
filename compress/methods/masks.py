"""Weight masks: which weights are prunable, which amount each gets, and holding zeros at zero."""

from __future__ import annotations

import csv
import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from compress.errors import ConfigError

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors of conv and linear layers, keyed by module path (`features.0`)."""
    return {
        path: module.weight
        for path, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
    }


def matching(paths: Sequence[str], pattern: str, option: str) -> list[str]:
    """Module paths matching a glob `pattern`; none is a ConfigError listing the paths."""
    found = [p for p in paths if fnmatch.fnmatchcase(p, pattern)]
    if not found:
        raise ConfigError(
            f"{option}: pattern '{pattern}' matches no prunable layer; "
            f"prunable layers: {', '.join(paths)}"
        )
    return found


def layer_amounts(
    paths: Sequence[str],
    amount: float,
    overrides: Mapping[str, float],
    exclude: Sequence[str],
) -> tuple[dict[str, float], list[str]]:
    """Split layers into those with their own amount (overrides) and the shared pool.

    Returns `(own, pool)`: `own` maps each overridden layer to its amount (the last
    matching pattern wins); `pool` lists the layers that share `amount`. Excluded
    layers appear in neither.
    """
    excluded = {p for pattern in exclude for p in matching(paths, pattern, "method.exclude")}
    own: dict[str, float] = {}
    for pattern, value in overrides.items():
        if not 0 <= value < 1:
            raise ConfigError(f"method.layers['{pattern}'] must be in [0, 1), got {value}")
        for path in matching(paths, pattern, "method.layers"):
            own[path] = value
    pool = [p for p in paths if p not in excluded and p not in own]
    return {p: a for p, a in own.items() if p not in excluded}, pool


def keep_top(scores: torch.Tensor, amount: float) -> torch.Tensor:
    """Boolean mask keeping the largest `1 - amount` share of `scores` (ties broken by index)."""
    keep = scores.numel() - round(amount * scores.numel())
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if keep > 0:
        mask[torch.topk(scores.flatten(), keep, sorted=False).indices] = True
    return mask.view_as(scores)


def unstructured_masks(
    scores: Mapping[str, torch.Tensor],
    own: Mapping[str, float],
    pool: Sequence[str],
    amount: float,
    scope: str,
) -> dict[str, torch.Tensor]:
    """Masks removing each layer's own amount, and `amount` of the pool per layer or globally."""
    masks = {path: keep_top(scores[path], a) for path, a in own.items()}
    if scope == "layer" or not pool:
        masks.update({path: keep_top(scores[path], amount) for path in pool})
        return masks
    flat = keep_top(torch.cat([scores[p].flatten() for p in pool]), amount)
    start = 0
    for path in pool:
        n = scores[path].numel()
        masks[path] = flat[start : start + n].view_as(scores[path])
        start += n
    return masks


def n_of_m_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the `n` largest of every `m` consecutive weights along each output's inputs."""
    rows = weight.detach().abs().reshape(weight.shape[0], -1, m)
    keep = torch.topk(rows, n, dim=-1).indices
    mask = torch.zeros_like(rows, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.view_as(weight)


class MaskSet:
    """Masks bound to live parameters; `apply` zeroes what is pruned (after each step)."""

    def __init__(self, weights: dict[str, nn.Parameter]) -> None:
        self.weights = weights
        self.masks: dict[str, torch.Tensor] = {}

    def set(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = {path: m.to(self.weights[path].dtype) for path, m in masks.items()}
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for path, mask in self.masks.items():
            self.weights[path].mul_(mask)

    def sparsity(self) -> float:
        """Share of all prunable weights (masked or not) that are zero."""
        total = sum(w.numel() for w in self.weights.values())
        zeros = sum(w.numel() - int(w.count_nonzero()) for w in self.weights.values())
        return zeros / total if total else 0.0

    def write_table(self, path: Path) -> Path:
        """Per-layer sparsity as CSV: layer, shape, weights, nonzero, sparsity, masked."""
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["layer", "shape", "weights", "nonzero", "sparsity", "masked"])
            for name, weight in self.weights.items():
                nonzero = int(weight.count_nonzero())
                writer.writerow(
                    [
                        name,
                        "x".join(map(str, weight.shape)),
                        weight.numel(),
                        nonzero,
                        f"{1 - nonzero / weight.numel():.6f}",
                        name in self.masks,
                    ]
                )
        return path
