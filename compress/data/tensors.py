"""The in-memory split: whole tensors on the device, batches are index slices of them.

The fast default for data that fits: no copy per batch beyond the slice, and augmentation
runs as batched tensor ops on the device (no CPU round trip).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from compress.data.augment import AugmentConfig
from compress.data.bundle import ALL, Batch, Shard, Split


def order(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """The rows of one epoch: shuffled by `generator`, else 0..n-1."""
    return torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)


@dataclass(frozen=True, eq=False)
class TensorSplit(Split):
    """``x`` is float32 (N, C, H, W), already normalised; ``y`` is int64 (N,); both on the
    target device. ``black`` is the normalised value of a black pixel per channel (1, C, 1, 1),
    what augmentation pads with (zero when nothing was normalised)."""

    x: torch.Tensor
    y: torch.Tensor
    black: torch.Tensor | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.x.device

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def loader(
        self,
        batch_size: int,
        *,
        seed: int | None = None,
        augment: AugmentConfig | None = None,
        shard: Shard = ALL,
    ) -> TensorBatches:
        return TensorBatches(self, batch_size, seed, augment, shard)


class TensorBatches:
    """Epochs of index slices over a `TensorSplit`; each `iter` draws a new order."""

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        seed: int | None,
        augment: AugmentConfig | None,
        shard: Shard = ALL,
    ) -> None:
        self.split, self.batch_size, self.shard = split, batch_size, shard
        self.shuffle = torch.Generator().manual_seed(seed) if seed is not None else None
        self.augment = augment if augment is not None and augment.enabled else None
        if self.augment is not None:
            # On the data's device, so that the random offsets are drawn where they are used.
            self.augment_rng = torch.Generator(device=split.device).manual_seed(
                shard.seed(seed or 0)
            )

    def __len__(self) -> int:
        return self.shard.batches(len(self.split), self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        split = self.split
        rows = order(len(split), self.shuffle)
        # The order crosses to the device once per epoch: indexing device tensors with CPU
        # indices would copy them over at every batch, each copy waiting for the device.
        on_device = rows.to(split.device)
        for start in range(0, len(rows), self.batch_size):
            idx = self.shard.part(rows[start : start + self.batch_size])
            if idx is None:
                return
            where = self.shard.part(on_device[start : start + self.batch_size])
            x = split.x[where]
            if self.augment is not None:
                x = self._augmented(x)
            yield Batch(x, split.y[where], idx)

    def _augmented(self, x: torch.Tensor) -> torch.Tensor:
        assert self.augment is not None
        black = self.split.black
        if black is None:
            return self.augment.apply(x, self.augment_rng)
        # Shifted so that black is 0 while augmenting: padding is black, as on the streamed
        # path where torchvision pads the raw pixels.
        return self.augment.apply(x - black, self.augment_rng) + black
