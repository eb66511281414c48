"""Attention-map taps: where a transformer's attention probabilities (N, heads, T, T) pass.

A tap in `distill.attention_maps` names an attention module or its map. The attention of
`model=vit` passes its softmax through an `AttentionMap` (an identity), so `blocks.3.attn`
resolves to its child `blocks.3.attn.map`. Any other module is accepted when what it emits
is such probabilities (an `nn.Softmax(dim=-1)` inside a user's own attention, say); which it
emits is seen on the probe batch before training. A module that does not expose its
weights that way (`nn.MultiheadAttention` returns a tuple whose weights, if any, are
averaged over heads; a Linear emits features) is refused in one line naming the modules
that do.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.distill.adapters import describe
from compress.distill.config import LOGITS
from compress.errors import ConfigError
from compress.models.vit import AttentionMap

#: How far from 1 a query row of probabilities may sum (float32 softmax, any precision).
_ROW_SUM_TOLERANCE = 1e-3


def resolve_map(model: nn.Module, path: str) -> str:
    """The path whose output a map tap records: `path` itself, or its one AttentionMap child."""
    if path == LOGITS:
        return path
    module = model.get_submodule(path)
    if isinstance(module, AttentionMap):
        return path
    children = [name for name, child in module.named_children() if isinstance(child, AttentionMap)]
    return f"{path}.{children[0]}" if len(children) == 1 else path


def map_modules(model: nn.Module) -> list[str]:
    """The modules whose attention maps a tap can see: the parents of the AttentionMaps."""
    return [
        path.rpartition(".")[0] or path
        for path, module in model.named_modules()
        if isinstance(module, AttentionMap)
    ]


def is_attention_maps(output: object) -> bool:
    """Whether a tap emitted (N, heads, T, T) probabilities: rows over the keys summing to 1."""
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        return False
    if output.shape[2] != output.shape[3] or not output.is_floating_point():
        return False
    rows = output.float().sum(dim=-1)
    close = torch.allclose(rows, torch.ones_like(rows), atol=_ROW_SUM_TOLERANCE)
    return bool(close and (output >= 0).all())


def check_maps(model: nn.Module, role: str, path: str, output: object) -> None:
    """Refuse, in one line, a map tap whose output is not attention probabilities."""
    if is_attention_maps(output):
        return
    what = "the output" if path == LOGITS else type(model.get_submodule(path)).__name__
    found = map_modules(model)
    where = (
        f"modules that do: {', '.join(found)}"
        if found
        else "this model has none (model=vit's attention passes them through attn.map)"
    )
    raise ConfigError(
        f"distill.attention_maps: {role} tap '{path}' ({what}) exposes no attention weights: "
        f"it emits {describe(output)}, not probabilities (heads, T, T); {where}"
    )


def check_pair(pair: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Refuse maps over different token counts (the loss compares query rows one to one)."""
    if student.shape[2] != teacher.shape[2]:
        raise ConfigError(
            f"distill.attention_maps {pair}: student maps {tuple(student.shape[1:])} and "
            f"teacher maps {tuple(teacher.shape[1:])} (heads, T, T) differ in token count "
            f"({student.shape[2]} vs {teacher.shape[2]}); the same image size, patch size and "
            "pooling give the same count"
        )
