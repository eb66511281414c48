"""Generated, learnable data: runs and tests that need no files and finish in milliseconds."""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from compress.config import require
from compress.data.base import DatasetConfig
from compress.data.bundle import RawData


def make_fake_raw(
    num_train: int,
    num_test: int,
    shape: tuple[int, int, int],
    num_classes: int,
    noise: float,
    generator: torch.Generator,
) -> RawData:
    """Class prototypes plus Gaussian noise; train and test are independent draws around them."""
    prototypes = torch.randn((num_classes, *shape), generator=generator)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Balanced labels in random order, so every class appears even in small sets.
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=generator)]
        samples = prototypes[labels] + noise * torch.randn((count, *shape), generator=generator)
        return samples, labels

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return RawData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        scale=1.0,
    )


@dataclass(frozen=True)
class FakeConfig(DatasetConfig):
    """Generated data: sizes, image shape, classes and noise are all options."""

    name: ClassVar[str] = "fake"

    num_train: int = 512
    num_test: int = 256
    shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10
    noise: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "shape", tuple(self.shape))
        for key in ("num_train", "num_test"):
            value = getattr(self, key)
            require(value >= 1, f"dataset.{key} must be >= 1; got {value!r}")
        require(
            self.num_classes >= 2, f"dataset.num_classes must be >= 2; got {self.num_classes!r}"
        )
        require(
            math.isfinite(self.noise) and self.noise >= 0,
            f"dataset.noise must be >= 0; got {self.noise!r}",
        )
        require(
            len(self.shape) == 3 and all(d >= 1 for d in self.shape),
            "dataset.shape must be three positive integers [channels, height, width]; "
            f"got {list(self.shape)!r}",
        )

    def load_raw(self, generator: torch.Generator) -> RawData:
        channels, height, width = self.shape
        return make_fake_raw(
            self.num_train,
            self.num_test,
            (channels, height, width),
            self.num_classes,
            self.noise,
            generator,
        )
