"""Generated, learnable data: runs and tests that need no files and finish in milliseconds."""

import torch

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
