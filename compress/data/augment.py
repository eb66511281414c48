"""Training-batch augmentation (one `Plugin` each), applied by a split's training loader.

Each option says how to transform a whole in-memory batch with batched tensor ops on the
batch's own device (`apply`, randomness from the generator the loader seeds, so the same seed
gives the same augmented batches), and which torchvision transforms v2 do the same to one
streamed image in a DataLoader worker (`transforms`). Both see pixels where 0 is black, so
padding is black on either path. Evaluation (accuracy, predict, validation) never sees it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from compress.config import require
from compress.plugins import Plugin, Registry


@dataclass(frozen=True)
class AugmentConfig(Plugin):
    """Base of the `augment` options: `apply` transforms one training batch."""

    registry: ClassVar[Registry[AugmentConfig]] = Registry("augment", "compress.data.augmentations")

    @property
    def enabled(self) -> bool:
        return True

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The augmented batch `x` (same shape, dtype and device)."""
        raise NotImplementedError

    def transforms(self, size: tuple[int, int]) -> list[Any]:
        """torchvision v2 transforms doing the same to one (C, H, W) image of `size`."""
        raise NotImplementedError

    def check(self, shape: tuple[int, ...]) -> None:
        """Refuse in one line inputs it cannot transform (a train split of `shape`)."""
        require(
            len(shape) == 4,
            f"augment={self.name} needs image batches (N, C, H, W), got shape {tuple(shape)}",
        )

    def key(self) -> dict[str, Any]:
        """What identifies the option (for cache keys)."""
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class NoAugment(AugmentConfig):
    """`augment=none`: training batches as they are."""

    name = "none"

    @property
    def enabled(self) -> bool:
        return False

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def transforms(self, size: tuple[int, int]) -> list[Any]:
        return []

    def check(self, shape: tuple[int, ...]) -> None:
        return None


def parse_augment(section: dict[str, Any] | None) -> AugmentConfig:
    return AugmentConfig.registry.parse(section or {"name": "none"}, "augment")


def draw(high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`n` integers in [0, high), from `generator` (on its own device), moved to `device`."""
    values = torch.randint(high, (n,), generator=generator, device=generator.device)
    return values.to(device, non_blocking=True)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image of `x` by `pad` and crop it back to its size at a random offset
    per image: a random translation of up to `pad` pixels each way, zero filled."""
    n, _, h, w = x.shape
    if pad == 0 or n == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    top = draw(2 * pad + 1, n, generator, x.device)
    left = draw(2 * pad + 1, n, generator, x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices split by the channel slice put their dims first: (N, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    # Copied into (N, C, H, W) strides: with one channel, `contiguous()` would keep the
    # permuted strides, which convolutions read as channels-last (and then so is the
    # weights' gradient, which DDP must copy to its buckets).
    return torch.empty_like(x, memory_format=torch.contiguous_format).copy_(out.permute(0, 3, 1, 2))


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of `x` mirrored left-right with probability 1/2."""
    flip = draw(2, len(x), generator, x.device).bool()
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
