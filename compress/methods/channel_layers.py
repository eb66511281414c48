"""Which layers channel pruning may cut and what it reports of them.

The layer producing the class logits is found by running the model (the conv or linear
layer that runs last) and is never pruned; the per-layer table lists what was kept.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from compress.errors import ConfigError
from compress.methods.masks import PRUNABLE_TYPES
from compress.models.eval_mode import eval_mode


def out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def classifier(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The conv/linear layer that runs last in a forward pass: it produces the logits."""
    calls: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda module, *_: calls.append(module))
        for m in model.modules()
        if isinstance(m, PRUNABLE_TYPES)
    ]
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not calls:
        raise ConfigError("method 'prune_channels': the model has no conv or linear layer")
    return calls[-1]


def write_table(path: Path, original: dict[str, int], kept: dict[str, int]) -> Path:
    """Per-layer CSV: layer, original output channels/features, kept, share removed."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "original", "kept", "removed"])
        for layer, count in original.items():
            writer.writerow([layer, count, kept[layer], f"{1 - kept[layer] / count:.6f}"])
    return path
