"""Weight masks: which weights are prunable, magnitude scores, and holding zeros at zero."""

from __future__ import annotations

import torch
from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight tensors of conv and linear layers, keyed by module path (`features.0`)."""
    return {
        path: module.weight
        for path, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
    }


def keep_top(scores: torch.Tensor, amount: float) -> torch.Tensor:
    """Boolean mask keeping the largest `1 - amount` share of `scores` (ties broken by index)."""
    keep = scores.numel() - round(amount * scores.numel())
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if keep > 0:
        mask[torch.topk(scores.flatten(), keep, sorted=False).indices] = True
    return mask.view_as(scores)


def magnitude_masks(
    weights: dict[str, nn.Parameter], amount: float, scope: str
) -> dict[str, torch.Tensor]:
    """L1-magnitude masks removing `amount` of the weights, per layer or over all layers."""
    scores = {path: w.detach().abs() for path, w in weights.items()}
    if scope == "layer":
        return {path: keep_top(s, amount) for path, s in scores.items()}
    flat = keep_top(torch.cat([s.flatten() for s in scores.values()]), amount)
    masks, start = {}, 0
    for path, s in scores.items():
        masks[path] = flat[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


class MaskSet:
    """Masks bound to live parameters; `apply` zeroes what is pruned (after each step)."""

    def __init__(self, weights: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> None:
        self.weights = weights
        self.masks = {path: m.to(weights[path].dtype) for path, m in masks.items()}
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for path, mask in self.masks.items():
            self.weights[path].mul_(mask)

    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.count_nonzero()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        return {path: 1.0 - int(m.count_nonzero()) / m.numel() for path, m in self.masks.items()}
