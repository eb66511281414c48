"""A model for the tests of data-parallel jobs: the process of one rank dies mid-training."""

from __future__ import annotations

import math
import os
import signal

import torch
from torch import nn


class DiesInTraining(nn.Module):
    """A small MLP; on rank `rank` of a data-parallel job, its process kills itself
    (SIGKILL, as an out-of-memory killer would) at the `at`-th training forward."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, rank: int = 1, at: int = 5
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
        )
        self.rank, self.at, self.calls = rank, at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and os.environ.get("RANK") == str(self.rank):
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)
