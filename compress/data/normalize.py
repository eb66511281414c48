"""`dataset.normalize`: how pixels in [0, 1] become model inputs, and the values used.

`auto` standardises each channel with the train split's own mean and std (the default, as
before); `none` leaves pixels in [0, 1]; `{mean: [...], std: [...]}` applies given values,
one per channel (e.g. the statistics the weights one loads were trained with).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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


def channel_moments(
    chunks: Iterable[torch.Tensor], scale: float
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population) of images (N, C, ...) times `scale`, summed in
    float64 over `chunks`: the in-memory and the streamed path get the very same values."""
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    count = 0
    for chunk in chunks:
        dims = [d for d in range(chunk.dim()) if d != 1]
        values = chunk.to(torch.float64) * scale
        part, part_sq = values.sum(dim=dims), values.square().sum(dim=dims)
        total = part if total is None else total + part
        squares = part_sq if squares is None else squares + part_sq
        count += chunk.numel() // chunk.shape[1]
    if total is None or squares is None or count == 0:
        raise ConfigError("dataset.normalize=auto needs train images; the train split is empty")
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel: centre only
    return [float(v) for v in mean], [float(v) for v in std]


def statistics(
    value: NormalizeValue,
    channels: int,
    train_chunks: Callable[[], Iterable[torch.Tensor]],
    scale: float,
) -> Normalization:
    """What to apply: for `auto`, the moments of the train images `train_chunks()` yields
    (in their source dtype, `scale` maps them to [0, 1]); for the others, no pass at all."""
    check_channels(value, channels)
    if value == AUTO:
        mean, std = channel_moments(train_chunks(), scale)
        return Normalization(AUTO, tuple(mean), tuple(std))
    if value == NONE:
        return Normalization(NONE, (0.0,) * channels, (1.0,) * channels)
    assert isinstance(value, Mapping)
    mean = tuple(float(v) for v in value["mean"])
    return Normalization("explicit", mean, tuple(float(v) for v in value["std"]))


def as_tensors(
    normalization: Normalization, dims: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as float32 (1, C, 1, ...) tensors for images of `dims` dimensions."""
    shape = [1, len(normalization.mean), *([1] * (dims - 2))]
    return tuple(  # type: ignore[return-value]
        torch.tensor(values, dtype=torch.float32, device=device).view(shape)
        for values in (normalization.mean, normalization.std)
    )


def check_channels(value: NormalizeValue, channels: int) -> None:
    """Explicit values must match the images' channels (checked before any tensor moves)."""
    if isinstance(value, Mapping) and len(value["mean"]) != channels:
        raise ConfigError(
            f"dataset.normalize has {len(value['mean'])} mean/std values but the images have "
            f"{channels} channel(s); give one per channel"
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
