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
class Normalization:
    """What was applied to pixels in [0, 1]: ``(x - mean) / std`` per channel.

    ``mode`` is ``auto`` (the train split's own statistics), ``none`` (mean 0, std 1: nothing
    applied) or ``explicit`` (the config's values).
    """

    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class DataBundle:
    """Everything a run needs about its data; ``fingerprint`` ties logged results to exact data.

    ``class_names[i]`` names label ``i``; ``normalization`` holds the values really applied
    (the computed ones for ``auto``), so weights trained elsewhere can be fed alike.
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    fingerprint: str
    class_names: tuple[str, ...] = ()
    normalization: Normalization = Normalization("auto", (), ())


@dataclass(frozen=True)
class RawData:
    """A source's samples before val carving and normalisation, kept in their compact dtype.

    Images stay uint8 (or float for generated data) on the CPU until the very end so that carving,
    hashing and the device transfer move as few bytes as possible; ``scale`` maps them to [0, 1].
    A source with its own val split (an image folder's ``val/``) sets ``x_val``/``y_val``; the
    others leave them None and val is carved from train. ``class_names`` default to "0", "1", ...
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    scale: float
    class_names: tuple[str, ...] | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
