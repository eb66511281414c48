"""Which layers channel pruning may cut, how it ranks channels, and what it reports.

The layer producing the class logits is found by running the model (the conv or linear
layer that runs last) and is never pruned; the per-layer table lists what was kept.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

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


#: Layers whose channels Torch-Pruning knows how to follow.
_FOLLOWED = (*PRUNABLE_TYPES, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


def untraceable(model: nn.Module, error: Exception) -> ConfigError:
    """One line naming the layer channel pruning cannot follow (the first with parameters
    of a kind it does not know, or a parameter used outside any layer)."""
    odd = [
        f"'{path}' ({type(module).__name__})" if path else f"a parameter of {type(module).__name__}"
        for path, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, _FOLLOWED)
    ]
    odd.sort(key=lambda text: text.startswith("a parameter"))  # layers before raw parameters
    where = f"; the first layer it cannot follow: {odd[0]}" if odd else ""
    detail = str(error).splitlines()[0] if str(error) else ""
    return ConfigError(
        f"method 'prune_channels' cannot trace this model's channel dependencies "
        f"({type(error).__name__}: {detail}){where}; use unstructured pruning (method=prune) "
        "or method.ignore the layers around it"
    )


def write_table(path: Path, original: dict[str, int], kept: dict[str, int]) -> Path:
    """Per-layer CSV: layer, original output channels/features, kept, share removed."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "original", "kept", "removed"])
        for layer, count in original.items():
            writer.writerow([layer, count, kept[layer], f"{1 - kept[layer] / count:.6f}"])
    return path


class SeededRandomImportance:
    """Random channel scores from a seeded generator (tp's RandomImportance uses the global RNG)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: Any) -> torch.Tensor:
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self.generator)


def taylor_gradients(
    model: nn.Module, train: Any, batch_size: int, batches: int, seed: int
) -> None:
    """Accumulate dL/dw over `batches` random training batches (eval mode, so batch-norm
    statistics and dropout stay as they are): what the taylor criterion ranks by."""
    loader = train.loader(batch_size, seed=seed)
    count = min(batches, len(loader))
    model.zero_grad(set_to_none=True)
    with eval_mode(model):
        for _, (x, y, _) in zip(range(count), loader, strict=False):
            loss = F.cross_entropy(model(x), y)
            (loss / count).backward()


def importance(kind: str, seed: int, model: nn.Module, has_data: bool) -> Any:
    """Torch-Pruning's criterion for `method.importance`, if it can rank this model."""
    if kind == "taylor" and not has_data:
        raise ConfigError(
            "method.importance 'taylor' needs training batches for its gradients, "
            "but no data was given"
        )
    if kind == "bn_scale" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise ConfigError(
            "method.importance 'bn_scale' ranks channels by batch-norm scales, but the "
            "model has no batch norm; use l1, l2 or taylor"
        )
    if kind in ("l1", "l2"):
        return tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return SeededRandomImportance(seed)
