"""`dataset.normalize`: how pixels in [0, 1] become model inputs, and the values used.

`auto` standardises each channel with the train split's own mean and std (the default, as
before); `none` leaves pixels in [0, 1]; `{mean: [...], std: [...]}` applies given values,
one per channel (e.g. the statistics the weights one loads were trained with).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from compress.config import require
from compress.data.bundle import Normalization
from compress.errors import ConfigError

AUTO = "auto"
NONE = "none"

#: What `dataset.normalize` may hold: a mode, or per-channel values.
NormalizeValue = str | dict[str, Any]  # checked by check_normalize, for its clearer messages


def check_normalize(value: Any) -> None:
    """A one-line ConfigError unless `value` is auto, none or valid mean/std lists."""
    if isinstance(value, str):
        require(
            value in (AUTO, NONE),
            f"dataset.normalize must be auto, none or {{mean: [...], std: [...]}}; got {value!r}",
        )
        return
    require(
        isinstance(value, Mapping) and set(value) == {"mean", "std"},
        "dataset.normalize as a mapping needs exactly the keys mean and std (one value per "
        f"channel); got {dict(value) if isinstance(value, Mapping) else value!r}",
    )
    mean, std = value["mean"], value["std"]
    for key, values in (("mean", mean), ("std", std)):
        require(
            isinstance(values, list | tuple) and len(values) >= 1 and all(map(_finite, values)),
            f"dataset.normalize.{key} must be a non-empty list of finite numbers; got {values!r}",
        )
    require(
        len(mean) == len(std),
        f"dataset.normalize: mean has {len(mean)} values but std has {len(std)}",
    )
    require(all(v > 0 for v in std), f"dataset.normalize.std must all be > 0; got {std!r}")


def salt(value: NormalizeValue) -> str:
    """What the fingerprint adds for this normalisation: nothing for auto (fingerprints of
    earlier runs stay valid), the mode or values otherwise, so a baseline trained on other
    inputs is never taken from the cache."""
    if value == AUTO:
        return ""
    if isinstance(value, str):
        return f"|normalize:{value}"
    return f"|normalize:{[float(v) for v in value['mean']]}:{[float(v) for v in value['std']]}"


def statistics(value: NormalizeValue, train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (1, C, 1, ...) mean and std to apply, from `train_x` scaled to [0, 1]."""
    channels = int(train_x.shape[1])
    shape = [1, channels, *([1] * (train_x.dim() - 2))]
    if value == AUTO:
        dims = [d for d in range(train_x.dim()) if d != 1]
        mean = train_x.mean(dim=dims, keepdim=True)
        std = train_x.std(dim=dims, keepdim=True, correction=0)
        return mean, torch.where(std > 1e-6, std, torch.ones_like(std))  # constant: centre only
    if value == NONE:
        zeros = torch.zeros(shape, dtype=train_x.dtype, device=train_x.device)
        return zeros, torch.ones_like(zeros)
    assert isinstance(value, Mapping)
    check_channels(value, channels)
    mean = torch.tensor(value["mean"], dtype=train_x.dtype, device=train_x.device).view(shape)
    std = torch.tensor(value["std"], dtype=train_x.dtype, device=train_x.device).view(shape)
    return mean, std


def check_channels(value: NormalizeValue, channels: int) -> None:
    """Explicit values must match the images' channels (checked before any tensor moves)."""
    if isinstance(value, Mapping) and len(value["mean"]) != channels:
        raise ConfigError(
            f"dataset.normalize has {len(value['mean'])} mean/std values but the images have "
            f"{channels} channel(s); give one per channel"
        )


def described(value: NormalizeValue, mean: torch.Tensor, std: torch.Tensor) -> Normalization:
    """The record of what was applied, as plain floats."""
    mode = value if isinstance(value, str) else "explicit"
    as_floats = [tuple(float(v) for v in t.flatten().tolist()) for t in (mean, std)]
    return Normalization(mode, as_floats[0], as_floats[1])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
