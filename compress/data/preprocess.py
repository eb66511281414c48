"""What a model's weights expect of their inputs (torchvision's weight transforms), applied to
images before normalisation: channels, resize, centre crop.

The same torchvision v2 functional ops run on whole uint8 batches for in-memory data and on
one image in a DataLoader worker for streamed data, so both paths give the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from compress.data.normalize import AUTO, NormalizeValue


@dataclass(frozen=True)
class Preprocessing:
    """How inputs must look for a model's weights: resize the shorter side to `resize`,
    centre-crop to `crop`, normalise with `mean`/`std` (one per channel: a grayscale image
    is repeated to that many channels)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: tuple[int, ...] | None = None
    crop: tuple[int, ...] | None = None

    @property
    def channels(self) -> int:
        return len(self.mean)

    def salt(self) -> str:
        """What the data fingerprint adds: the inputs differ from the source's pixels."""
        return f"|preprocess:{self.resize}:{self.crop}:{self.channels}"

    def normalize(self, configured: NormalizeValue) -> NormalizeValue:
        """The weights' mean and std in place of `auto`; an explicit choice is kept."""
        if configured != AUTO:
            return configured
        return {"mean": list(self.mean), "std": list(self.std)}

    def image_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The (C, H, W) an image of `shape` (C, H, W) has after `apply`."""
        probe = torch.zeros((1, *shape), dtype=torch.uint8)
        return tuple(self.apply(probe).shape[1:])

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """The images (N, C, H, W) or one image (C, H, W) as the weights expect them."""
        from torchvision.transforms.v2 import functional as TF

        channels = images.shape[-3]
        if channels == 1 and self.channels > 1:
            images = images.expand(*images.shape[:-3], self.channels, *images.shape[-2:])
        if self.resize is not None:
            images = TF.resize(images, list(self.resize), antialias=True)
        if self.crop is not None:
            images = TF.center_crop(images, list(self.crop))
        return images.contiguous()

    def apply_in_chunks(self, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """`apply` over a whole split, `chunk` images at a time (the resized copy of a chunk
        is all the extra memory it takes)."""
        if len(images) == 0:
            return self.apply(images[:0].new_zeros((1, *images.shape[1:])))[:0]
        return torch.cat([self.apply(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def composed(*steps: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable | None:
    """One transform running `steps` in order (None steps skipped); None if there are none."""
    present = [step for step in steps if step is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return _Chain(tuple(present))


@dataclass(frozen=True)
class _Chain:
    """A picklable composition (DataLoader workers may be spawned)."""

    steps: tuple[Callable[[torch.Tensor], torch.Tensor], ...]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return image
