"""Containers that cross module boundaries: what loaders produce and what callers receive."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """One split as whole tensors, so training loops index them directly instead of a DataLoader.

    ``x`` is float32 (N, C, H, W), already normalised; ``y`` is int64 (N,); both on the target
    device.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DataBundle:
    """Everything a run needs about its data; ``fingerprint`` ties logged results to exact data."""

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    fingerprint: str


@dataclass(frozen=True)
class RawData:
    """A source's samples before val carving and normalisation, kept in their compact dtype.

    Images stay uint8 (or float for generated data) on the CPU until the very end so that carving,
    hashing and the device transfer move as few bytes as possible; ``scale`` maps them to [0, 1].
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    scale: float
