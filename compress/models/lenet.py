"""LeNet-300-100 and the Caffe LeNet-5, the MNIST models of Han et al. 2015 (Deep Compression).

Kept faithful to those papers so parameter counts and compression rates can be compared with
the published numbers (266,610 and 431,080 weights for 10 classes on 28x28).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compress.models.base import ModelConfig
from compress.models.mlp import mlp_stack
from compress.models.options import image_shape


@dataclass(frozen=True)
class LeNet300Config(ModelConfig):
    """LeNet-300-100: flatten -> 300 -> 100 -> classes with ReLU; any input size works."""

    name: ClassVar[str] = "lenet300"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return mlp_stack(math.prod(input_shape), (300, 100), num_classes)


def _conv_pool_size(size: int) -> int:
    """Spatial size after a valid 5x5 conv and a 2x2/stride-2 max pool."""
    return (size - 4) // 2


class LeNet5(nn.Module):
    """Caffe's LeNet: conv20 -> pool -> conv50 -> pool -> fc500 -> ReLU -> fc.

    Caffe's prototxt has no nonlinearity after the convolutions; only fc1 is followed by ReLU.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = image_shape("lenet5", input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        out_h = _conv_pool_size(_conv_pool_size(height))
        out_w = _conv_pool_size(_conv_pool_size(width))
        # An input too small for the convs gives a size < 1; keep fc1 constructible so the dry
        # forward in build_model fails instead and reports torch's own message about the shape.
        in_features = 50 * max(out_h, 1) * max(out_w, 1)
        self.classifier = nn.Sequential(
            nn.Linear(in_features, 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class LeNet5Config(ModelConfig):
    """Caffe LeNet-5; fc1 in_features follow from input_shape (800 for 28x28)."""

    name: ClassVar[str] = "lenet5"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return LeNet5(input_shape, num_classes)
