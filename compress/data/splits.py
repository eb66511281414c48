"""Carve val and the train subset, fingerprint the result, normalise with train statistics."""

import hashlib

import numpy as np
import torch

from compress.data.bundle import RawData, Split
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
    quick runs stay comparable with full ones.
    """
    total = len(raw.y_train)
    order = torch.randperm(total, generator=generator)
    n_val = round(val_fraction * total)
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
    return {
        "train": (raw.x_train[train_idx], raw.y_train[train_idx]),
        "val": (raw.x_train[val_idx], raw.y_train[val_idx]),
        "test": (raw.x_test, raw.y_test),
    }


def fingerprint(name: str, splits: dict[str, Pair]) -> str:
    """Short sha256 of the exact samples and labels used, in order, before normalisation."""
    digest = hashlib.sha256(name.encode())
    for split_name, (x, y) in splits.items():
        digest.update(f"|{split_name}:{tuple(x.shape)}:{x.dtype}:{len(y)}|".encode())
        for tensor in (x, y):
            digest.update(np.ascontiguousarray(tensor.cpu().numpy()).data)
    return digest.hexdigest()[:16]


def normalise(splits: dict[str, Pair], scale: float, device: torch.device) -> dict[str, Split]:
    """Move once, scale pixels to [0, 1], then standardise each channel with train statistics.

    The compact (uint8) tensors cross to the device, so the transfer is as small as it can be.
    """
    moved = {
        key: (x.to(device).to(torch.float32).mul_(scale), y.to(device, torch.int64))
        for key, (x, y) in splits.items()
    }
    train_x = moved["train"][0]
    dims = [d for d in range(train_x.dim()) if d != 1]
    mean = train_x.mean(dim=dims, keepdim=True)
    std = train_x.std(dim=dims, keepdim=True, correction=0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant channel: centre only
    return {key: Split(x.sub_(mean).div_(std), y) for key, (x, y) in moved.items()}
