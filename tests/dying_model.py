"""A model for the tests of data-parallel jobs: the process of one rank dies mid-training."""

from __future__ import annotations

import math
import os
import signal

import torch
from torch import nn


class DiesInTraining(nn.Module):
    """A small MLP; the process of rank `rank` (0 for a single process) sends itself
    `signal` at the `at`-th training forward: SIGKILL, as an out-of-memory killer would,
    or SIGTERM, as torchrun and SLURM do."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        rank: int = 1,
        at: int = 5,
        signal: str = "SIGKILL",
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
        )
        self.rank, self.at, self.signal, self.calls = rank, at, signal, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = os.environ.get("RANK", "0")
        if self.training and torch.is_grad_enabled() and rank == str(self.rank):
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.Signals[self.signal])
        return self.net(x)
