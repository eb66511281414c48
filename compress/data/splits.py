"""Carve val and the train subset, fingerprint the result, normalise the in-memory splits."""

import hashlib
from collections.abc import Iterator

import numpy as np
import torch

from compress.data.bundle import Normalization, RawData
from compress.data.normalize import as_tensors
from compress.data.tensors import TensorSplit
from compress.errors import ConfigError

# (images, labels) in the compact source dtype, before scaling and normalisation.
Pair = tuple[torch.Tensor, torch.Tensor]


def carve_rows(
    total: int,
    own_val: bool,
    val_fraction: float,
    train_subset: int | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of the official train part that form train and val, by one seeded shuffle.

    Val is carved before the subset is taken, so ``train_subset`` never changes the val set and
    quick runs stay comparable with full ones. A source with its own val split keeps it
    (`val_fraction` is then not used; val rows are empty); train is still shuffled alike.
    """
    order = torch.randperm(total, generator=generator)
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
    return train_idx, order[:n_val]


def carve(raw: RawData, train_idx: torch.Tensor, val_idx: torch.Tensor) -> dict[str, Pair]:
    """The train, val and test samples of `raw`, by the rows `carve_rows` chose."""
    own_val = raw.x_val is not None and raw.y_val is not None
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
    splits: dict[str, Pair], scale: float, device: torch.device, normalization: Normalization
) -> dict[str, TensorSplit]:
    """Move once, scale pixels to [0, 1], then apply `normalization` (see `statistics`).

    The compact (uint8) tensors cross to the device, so the transfer is as small as it can be.
    """
    dims = splits["train"][0].dim()
    mean, std = as_tensors(normalization, dims, device)
    black = -mean / std
    final = {}
    for key, (x, y) in splits.items():
        moved = x.to(device).to(torch.float32).mul_(scale).sub_(mean).div_(std)
        final[key] = TensorSplit(moved, y.to(device, torch.int64), black)
    return final


def chunks(x: torch.Tensor, size: int = 4096) -> Iterator[torch.Tensor]:
    """`x` in row chunks (for passes that should not copy it whole)."""
    for start in range(0, len(x), size):
        yield x[start : start + size]
