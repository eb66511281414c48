"""Fit a state dict made elsewhere into a freshly built model, or say in one line why not.

Nothing loads unless every key and shape matches, so a half-loaded model never trains.
With `reset_head` the classifier (the last Linear or Conv2d with `num_classes` outputs)
keeps its fresh initialisation: weights trained for other classes fit the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import ConfigError

_SHOWN = 3


def classifier_path(model: nn.Module, num_classes: int) -> str | None:
    """The module path of the layer producing the class logits: the last Linear or
    Conv2d with `num_classes` outputs."""
    found = None
    for path, module in model.named_modules():
        outputs = getattr(module, "out_features", getattr(module, "out_channels", None))
        if isinstance(module, nn.Linear | nn.Conv2d) and outputs == num_classes:
            found = path
    return found


def _under(key: str, path: str | None) -> bool:
    return path is not None and (key == path or key.startswith(f"{path}."))


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    num_classes: int,
    reset_head: bool,
    where: str,
) -> None:
    """Copy `state` into `model` in place; ConfigError if keys or shapes do not match."""
    own = model.state_dict()
    head = classifier_path(model, num_classes)
    if reset_head:
        if head is None:
            raise ConfigError(
                f"{where}: reset_head found no last layer with {num_classes} outputs to replace"
            )
        state = {k: v for k, v in state.items() if not _under(k, head)}
        own = {k: v for k, v in own.items() if not _under(k, head)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        model.load_state_dict(state, strict=not reset_head)
        return
    if not (missing or unexpected) and all(_under(k, head) for k in shapes):
        theirs = state[f"{head}.weight"].shape[0] if f"{head}.weight" in state else "other"
        raise ConfigError(
            f"{where}: the classifier '{head}' has {theirs} classes in the weights and "
            f"{num_classes} in the dataset; set model.reset_head=true to replace that layer"
        )
    parts = []
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected {_listed(unexpected)}")
    if shapes:
        sized = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]
        parts.append(f"shape mismatch {_listed(sized)}")
    hint = " (model.weights_prefix strips a key prefix)" if missing and unexpected else ""
    raise ConfigError(f"{where} do not fit the model: {'; '.join(parts)}{hint}")
