"""Containers that cross module boundaries: what loaders produce and what callers receive."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

import torch

if TYPE_CHECKING:
    from compress.data.augment import AugmentConfig


class Batch(NamedTuple):
    """One batch on the split's device: normalised float inputs, int64 labels, and the rows
    of the split they are (on the CPU; what per-row caches such as the teacher's index)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor


#: Spacing of the augmentation seeds of a data-parallel job's processes: each draws its own
#: random crops and shifts, process 0 the same ones a single process would.
_AUGMENT_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Shard:
    """One process's part of each batch in a data-parallel job: every process draws the
    same order of rows from the same seed, and of each batch of `batch_size` rows takes the
    `index`-th of `count` nearly equal chunks, so the job sees the batches one process would.
    A last batch too small to give every process a row is left out (on every process)."""

    index: int = 0
    count: int = 1

    def part(self, rows: torch.Tensor) -> torch.Tensor | None:
        """This process's rows of the batch `rows`; None: the batch is left out."""
        if self.count == 1:
            return rows
        return rows.tensor_split(self.count)[self.index] if len(rows) >= self.count else None

    def batches(self, n: int, batch_size: int) -> int:
        """How many batches of `n` rows each process takes."""
        full, rest = divmod(n, batch_size)
        return full + (rest > 0 and rest >= self.count)

    def seed(self, seed: int) -> int:
        """The seed of this process's random augmentation."""
        return seed + _AUGMENT_SEED_STRIDE * self.index


ALL = Shard()


class Batches(Protocol):
    """What a split's `loader` returns: each iteration is one epoch of batches (a fresh order
    when shuffled), and `len` is the number of batches per epoch."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


class Split(ABC):
    """One split, in memory (`TensorSplit`: whole tensors, batches are index slices) or
    streamed (`StreamedSplit`: a DataLoader). Every consumer takes batches from `loader`."""

    #: Where the batches are.
    device: torch.device
    #: The shape of one input, e.g. (C, H, W).
    image_shape: tuple[int, ...]
    #: Whether batches are read through a DataLoader (else sliced from tensors in memory).
    streamed: ClassVar[bool] = False

    @abstractmethod
    def __len__(self) -> int:
        """The number of samples."""

    @abstractmethod
    def loader(
        self,
        batch_size: int,
        *,
        seed: int | None = None,
        augment: AugmentConfig | None = None,
        shard: Shard = ALL,
    ) -> Batches:
        """Batches of `batch_size`, in row order, or shuffled (and `augment`ed, for training)
        from `seed`: the same seed gives the same batches on either kind of split. `shard`:
        only this process's part of each (a data-parallel job)."""


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
