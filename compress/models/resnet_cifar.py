"""CIFAR ResNets of He et al. 2016 (6n+2 layers): ResNet-20 and ResNet-56.

Shortcuts that change shape use option B, a 1x1 conv + BN projection, rather than the paper's
option A (strided identity zero-padded with extra channels). Structured channel pruning tools
such as Torch-Pruning's dependency graph can follow a projection's weights but not a padding
op with hard-coded channel counts, and the projection costs only ~2.8k parameters at width 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compress.models.base import ModelConfig
from compress.models.options import image_shape, positive_int


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs plus a shortcut; separate ReLU modules so each can be fused."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of ``blocks`` BasicBlocks (width, 2*width, 4*width), GAP, fc."""

    def __init__(self, in_channels: int, blocks: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        channels = width
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            stride = 1 if stage == 0 else 2
            layers = [
                BasicBlock(channels if i == 0 else out, out, stride if i == 0 else 1)
                for i in range(blocks)
            ]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He initialisation, as in the paper; drawn from torch's global RNG.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.flatten(self.pool(out)))


@dataclass(frozen=True)
class CifarResNetConfig(ModelConfig):
    """A 6n+2-layer CIFAR ResNet; subclasses fix n (`blocks`) and give the name."""

    blocks: ClassVar[int]

    width: int = 16

    def __post_init__(self) -> None:
        positive_int(self.label(), "width", self.width)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        in_channels, _, _ = image_shape(self.label(), input_shape)
        return CifarResNet(in_channels, self.blocks, num_classes, self.width)


@dataclass(frozen=True)
class ResNet20Config(CifarResNetConfig):
    """ResNet-20 (n=3): ~0.27M parameters at width 16."""

    name: ClassVar[str] = "resnet20"
    blocks: ClassVar[int] = 3


@dataclass(frozen=True)
class ResNet56Config(CifarResNetConfig):
    """ResNet-56 (n=9): ~0.86M parameters at width 16."""

    name: ClassVar[str] = "resnet56"
    blocks: ClassVar[int] = 9
