"""`augment=shift`: the MNIST recipe (random translation of a few pixels, zero fill)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.config import require
from compress.train.augment import AugmentConfig, random_crop


@dataclass(frozen=True)
class Shift(AugmentConfig):
    """Translate each image by up to `pixels` pixels in each direction, zero filled."""

    name = "shift"
    pixels: int = 2

    def __post_init__(self) -> None:
        require(self.pixels >= 0, f"augment.pixels must be >= 0, got {self.pixels}")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop(x, self.pixels, generator)
