"""`augment=shift`: the MNIST recipe (random translation of a few pixels, zero fill)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from compress.config import require
from compress.data.augment import AugmentConfig, random_crop


@dataclass(frozen=True)
class Shift(AugmentConfig):
    """Translate each image by up to `pixels` pixels in each direction, zero filled."""

    name = "shift"
    pixels: int = 2

    def __post_init__(self) -> None:
        require(self.pixels >= 0, f"augment.pixels must be >= 0, got {self.pixels}")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop(x, self.pixels, generator)

    def transforms(self, size: tuple[int, int]) -> list[Any]:
        from torchvision.transforms import v2

        return [v2.RandomCrop(list(size), padding=self.pixels, fill=0)] if self.pixels else []
