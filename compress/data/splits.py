"""Carve val and the train subset, fingerprint the result, normalise with train statistics."""

import hashlib

import numpy as np
import torch

from compress.data.bundle import Normalization, RawData, Split
from compress.data.normalize import (
    AUTO,
    NONE,
    NormalizeValue,
    check_channels,
    described,
    statistics,
)
from compress.errors import ConfigError

# (images, labels) in the compact source dtype, before scaling and normalisation.
Pair = tuple[torch.Tensor, torch.Tensor]


def carve(
    raw: RawData,
    val_fraction: float,
    train_subset: int | None,
    generator: torch.Generator,
) -> dict[str, Pair]:
    """Split the official train part into train and val by one seeded shuffle.

    Val is carved before the subset is taken, so ``train_subset`` never changes the val set and
    quick runs stay comparable with full ones. A source with its own val split keeps it
    (`val_fraction` is then not used); train is still shuffled the same way.
    """
    total = len(raw.y_train)
    order = torch.randperm(total, generator=generator)
    own_val = raw.x_val is not None and raw.y_val is not None
    n_val = 0 if own_val else round(val_fraction * total)
    train_idx = order[n_val:]
    if len(train_idx) == 0:
        raise ConfigError(
            f"dataset.val_fraction={val_fraction} leaves no training samples out of {total}"
        )
    if train_subset is not None:
        if train_subset > len(train_idx):
            raise ConfigError(
                f"dataset.train_subset={train_subset} exceeds the {len(train_idx)} training "
                "samples left after carving val; lower it or set it to null"
            )
        train_idx = train_idx[:train_subset]
    val_idx = order[:n_val]
    val = (raw.x_val, raw.y_val) if own_val else (raw.x_train[val_idx], raw.y_train[val_idx])
    return {
        "train": (raw.x_train[train_idx], raw.y_train[train_idx]),
        "val": val,  # type: ignore[dict-item]
        "test": (raw.x_test, raw.y_test),
    }


def fingerprint(name: str, splits: dict[str, Pair], extra: str = "") -> str:
    """Short sha256 of the exact samples and labels used, in order, before normalisation
    (`extra`: what else makes the inputs differ, e.g. a normalisation other than auto)."""
    digest = hashlib.sha256(name.encode())
    if extra:
        digest.update(extra.encode())
    for split_name, (x, y) in splits.items():
        digest.update(f"|{split_name}:{tuple(x.shape)}:{x.dtype}:{len(y)}|".encode())
        for tensor in (x, y):
            digest.update(np.ascontiguousarray(tensor.cpu().numpy()).data)
    return digest.hexdigest()[:16]


def normalise(
    splits: dict[str, Pair], scale: float, device: torch.device, normalize: NormalizeValue = AUTO
) -> tuple[dict[str, Split], Normalization]:
    """Move once, scale pixels to [0, 1], then apply `normalize` (by default, standardise each
    channel with train statistics); also return the values applied.

    The compact (uint8) tensors cross to the device, so the transfer is as small as it can be.
    """
    check_channels(normalize, int(splits["train"][0].shape[1]))
    moved = {
        key: (x.to(device).to(torch.float32).mul_(scale), y.to(device, torch.int64))
        for key, (x, y) in splits.items()
    }
    mean, std = statistics(normalize, moved["train"][0])
    if normalize != NONE:
        moved = {key: (x.sub_(mean).div_(std), y) for key, (x, y) in moved.items()}
    return {key: Split(x, y) for key, (x, y) in moved.items()}, described(normalize, mean, std)
