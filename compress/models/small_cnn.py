"""Small CNN, the default model for 8x8 scikit-learn digits: trains in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compress.models.registry import image_shape, positive_ints, register


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


@register("small_cnn")
def small_cnn(
    input_shape: tuple[int, ...], num_classes: int, channels: Sequence[int] = (16, 32, 64)
) -> nn.Module:
    """About 24k parameters with the default channels on 1x8x8 digits."""
    in_channels, _, _ = image_shape("small_cnn", input_shape)
    widths = positive_ints("small_cnn", "channels", channels, allow_empty=False)
    return SmallCNN(in_channels, widths, num_classes)
