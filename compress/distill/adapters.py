"""Hint adapters: the learned layer that maps a student's tapped output onto the teacher's.

FitNets regresses the student's hint onto the teacher's through a learned layer where their
widths differ, trained with the student. Which layer depends on what the tap emits (shapes
per sample, the batch dimension left out):

- feature maps (C, H, W) of the same spatial size: a 1x1 conv over the channels;
- token sequences (T, D) of the same length: a Linear over the last dim, applied to every
  token alike (as a transformer's own projections are);
- vectors (D,): a Linear.

Anything else is refused in one line naming both shapes: mapping token sequences of
different lengths, or a sequence onto a feature map, takes choices (which tokens, which
positions, the class token or not) that belong to the user's model, not to the hint.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import ConfigError

#: What a tap's output is, by its rank with the batch dimension.
KINDS = {2: "vector", 3: "token sequence (T, D)", 4: "feature map (C, H, W)"}


def describe(value: object) -> str:
    """What a tap recorded, per sample, in words for a one-line error."""
    if isinstance(value, torch.Tensor):
        return f"a tensor {tuple(value.shape[1:])}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} ({', '.join(describe(v) for v in value)})"
    return "None" if value is None else f"a {type(value).__name__}"


def _kind(shape: torch.Size) -> str:
    return KINDS.get(len(shape), f"{len(shape) - 1}-D output")


def hint_adapter(student: torch.Size, teacher: torch.Size, hint: str, allowed: str) -> nn.Module:
    """What maps a student output of shape `student` onto the teacher's `teacher` (both with
    the batch dimension); `allowed` is distill.adapter."""
    if student == teacher:
        return nn.Identity()
    s, t = tuple(student[1:]), tuple(teacher[1:])
    refused = f"distill.hints {hint}: student output {s} cannot be mapped onto the teacher's {t}"
    if allowed == "none":
        raise ConfigError(f"{refused} (adapter 'none': the shapes must be equal)")
    if len(s) != len(t):
        raise ConfigError(
            f"{refused}: a {_kind(student)} onto a {_kind(teacher)}; hint token sequences onto "
            "token sequences and feature maps onto feature maps"
        )
    if len(s) == 3 and s[1:] == t[1:]:
        return nn.Conv2d(s[0], t[0], kernel_size=1)
    if len(s) == 3:
        raise ConfigError(
            f"{refused}: spatial sizes {s[1:]} and {t[1:]} differ (a 1x1 conv adapter maps "
            "channels only)"
        )
    if len(s) == 2 and s[0] == t[0]:
        return nn.Linear(s[1], t[1])
    if len(s) == 2:
        raise ConfigError(
            f"{refused}: token counts differ ({s[0]} vs {t[0]}); a linear adapter maps the "
            "last dim only, and the same image size, patch size and pooling give the same count"
        )
    if len(s) == 1:
        return nn.Linear(s[0], t[0])
    raise ConfigError(
        f"{refused} (adapters: a 1x1 conv for feature maps of the same spatial size, a linear "
        "layer for vectors or token sequences of the same length)"
    )
