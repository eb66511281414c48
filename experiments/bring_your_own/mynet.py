"""The model of the worked example: a small CNN class of the user's own, nothing of compress.

compress builds it from `model._target_=mynet.MyNet` (with experiments/bring_your_own on
PYTHONPATH) and passes `num_classes` because the signature names it.
"""

from __future__ import annotations

import torch
from torch import nn


class MyNet(nn.Module):
    """Two conv-BN-ReLU-max-pool blocks, pooled to 4x4, then two Linear layers; any input
    of at least 16x16 pixels."""

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 16, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
