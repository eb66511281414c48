"""`augment=flip_crop`: the CIFAR recipe (pad 4, random crop, random horizontal flip)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from compress.config import require
from compress.data.augment import AugmentConfig, random_crop, random_flip


@dataclass(frozen=True)
class FlipCrop(AugmentConfig):
    """Zero-pad by `padding`, crop back to size at a random offset, flip with p = 1/2."""

    name = "flip_crop"
    padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        require(self.padding >= 0, f"augment.padding must be >= 0, got {self.padding}")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = random_crop(x, self.padding, generator)
        return random_flip(out, generator) if self.flip else out

    def transforms(self, size: tuple[int, int]) -> list[Any]:
        from torchvision.transforms import v2

        steps: list[Any] = [v2.RandomCrop(list(size), padding=self.padding, fill=0)]
        return [*steps, v2.RandomHorizontalFlip()] if self.flip else steps
