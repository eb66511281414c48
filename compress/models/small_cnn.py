"""Small CNN, the default model for 8x8 scikit-learn digits: trains in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compress.models.base import ModelConfig
from compress.models.options import image_shape, positive_ints


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv + BN + ReLU; the conv has no bias because BN adds one (and fuses cleanly)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class SmallCNN(nn.Module):
    """Conv blocks, a 2x2 max pool after the second, global average pool, linear classifier.

    Global pooling makes it independent of spatial size (anything >= 2x2 works) and keeps the
    classifier tiny, so most weights sit in convs, where channel pruning has something to do.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for index, out in enumerate(channels):
            layers.append(_conv_bn_relu(width, out))
            if index == 1:
                layers.append(nn.MaxPool2d(2))
            width = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


@dataclass(frozen=True)
class SmallCNNConfig(ModelConfig):
    """About 24k parameters with the default channels on 1x8x8 digits."""

    name: ClassVar[str] = "small_cnn"

    channels: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self) -> None:
        widths = positive_ints("small_cnn", "channels", self.channels, allow_empty=False)
        object.__setattr__(self, "channels", widths)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        in_channels, _, _ = image_shape("small_cnn", input_shape)
        return SmallCNN(in_channels, self.channels, num_classes)
