"""The streamed split: samples read by a DataLoader (workers, pinned memory, persistent
workers), for data that does not fit in memory or is asked to stream (`dataset.in_memory`).

Images stay in their compact dtype (uint8) through the workers, which apply the model's
preprocessing and, for training, the augmentation's torchvision v2 transforms; the batch
crosses to the device and is scaled and normalised there with the same float ops as the
in-memory path, so both paths give the same inputs for the same images. Shuffling draws the
same permutation from the same seed as the in-memory path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from compress.data.augment import AugmentConfig
from compress.data.bundle import ALL, Batch, Normalization, Shard, Split
from compress.data.normalize import as_tensors
from compress.data.preprocess import composed
from compress.data.stacking import item_name, read_item
from compress.data.tensors import order
from compress.errors import ConfigError


@dataclass(frozen=True, eq=False)
class StreamedSplit(Split):
    """Rows `rows` of `items` (a Dataset of (image, label)), `prepare`d per image in the
    workers; `scale` maps the images to [0, 1] before `normalization`. `split` and `where`
    name it in errors."""

    items: Dataset = field(repr=False)
    rows: torch.Tensor = field(repr=False)
    scale: float
    normalization: Normalization = field(repr=False)
    device: torch.device
    image_shape: tuple[int, ...]
    workers: int = 2
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    split: str = "train"
    where: str = "dataset"
    streamed: ClassVar[bool] = True

    def __len__(self) -> int:
        return len(self.rows)

    def loader(
        self,
        batch_size: int,
        *,
        seed: int | None = None,
        augment: AugmentConfig | None = None,
        shard: Shard = ALL,
    ) -> StreamedBatches:
        return StreamedBatches(self, batch_size, seed, augment, shard)

    def rows_dataset(self, augment: AugmentConfig | None = None) -> Rows:
        """The split's rows as a Dataset of (prepared image, label, row)."""
        random = augment.transforms(self.image_shape[-2:]) if augment is not None else []
        transform = composed(self.prepare, *random)
        return Rows(self.items, self.rows, transform, self.split, self.where)


class Rows(Dataset):
    """Item `rows[i]` of `items` as (image, label, i): `i` is the row within the split."""

    def __init__(
        self,
        items: Dataset,
        rows: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        split: str,
        where: str,
    ) -> None:
        self.items, self.rows, self.transform = items, rows.tolist(), transform
        self.split, self.where = split, where

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        index = self.rows[position]
        image, label = read_item(self.items, self.split, index, self.where)
        if self.transform is not None:
            try:
                image = self.transform(image)
            except Exception as error:
                name = item_name(self.items, self.split, index)
                raise ConfigError(
                    f"{self.where}: {name} could not be transformed ({error})"
                ) from error
        return image, label, position


class EpochSampler(Sampler[list[int]]):
    """Batches of row positions: each epoch a new permutation from `generator` (the same one
    the in-memory path draws), or 0..n-1 in order without one; of each, `shard`'s part (a
    distributed sampler: every process draws the same order and reads only its rows)."""

    def __init__(
        self, n: int, batch_size: int, generator: torch.Generator | None, shard: Shard = ALL
    ) -> None:
        self.n, self.batch_size, self.generator, self.shard = n, batch_size, generator, shard

    def __iter__(self) -> Iterator[list[int]]:
        rows = order(self.n, self.generator)
        for start in range(0, self.n, self.batch_size):
            part = self.shard.part(rows[start : start + self.batch_size])
            if part is None:
                return
            yield part.tolist()

    def __len__(self) -> int:
        return self.shard.batches(self.n, self.batch_size)


class StreamedBatches:
    """Epochs of a StreamedSplit through one DataLoader, whose workers persist across them."""

    def __init__(
        self,
        split: StreamedSplit,
        batch_size: int,
        seed: int | None,
        augment: AugmentConfig | None,
        shard: Shard = ALL,
    ) -> None:
        augment = augment if augment is not None and augment.enabled else None
        shuffle = torch.Generator().manual_seed(seed) if seed is not None else None
        self.split = split
        augment_seed = shard.seed(seed or 0)
        # Without workers the transforms draw from the global RNG: it is swapped for this
        # loader's own around each batch, so the same seed gives the same batches anyway.
        self.rng_state = (
            torch.Generator().manual_seed(augment_seed).get_state() if augment else None
        )
        self.mean, self.std = as_tensors(
            split.normalization, 1 + len(split.image_shape), split.device
        )
        workers = split.workers
        options: dict[str, Any] = {"persistent_workers": True} if workers > 0 else {}
        self.loader = DataLoader(
            split.rows_dataset(augment),
            batch_sampler=EpochSampler(len(split), batch_size, shuffle, shard),
            num_workers=workers,
            pin_memory=split.device.type == "cuda",
            # Seeds the workers' random transforms: the same seed, the same augmented batches.
            generator=torch.Generator().manual_seed(augment_seed),
            **options,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        device = self.split.device
        try:
            for x, y, idx in self._batches():
                x = x.to(device, non_blocking=True).to(torch.float32)
                x = x.mul_(self.split.scale).sub_(self.mean).div_(self.std)
                yield Batch(x, y.to(device, torch.int64, non_blocking=True), idx)
        except ConfigError as error:  # raised in a worker: its message carries the traceback
            raise ConfigError(last_line(str(error))) from None

    def _batches(self) -> Iterator[Any]:
        if self.rng_state is None or self.split.workers > 0:
            yield from self.loader
            return
        batches = iter(self.loader)
        while True:
            outer = torch.get_rng_state()
            torch.set_rng_state(self.rng_state)
            try:
                batch = next(batches, None)
            finally:
                self.rng_state = torch.get_rng_state()
                torch.set_rng_state(outer)
            if batch is None:
                return
            yield batch


def last_line(message: str) -> str:
    """A worker's error as the one line it was raised with (DataLoader prefixes the
    worker's traceback, whose last line is `module.Error: message`)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    kind, _, text = lines[-1].partition(": ")
    return text if text and "Error" in kind else lines[-1]
