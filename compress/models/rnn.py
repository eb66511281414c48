"""A recurrent classifier: an image read row by row as a sequence (the classic MNIST RNN).

Its LSTM or GRU and its Linear head are what dynamic int8 quantization turns into int8
kernels (`method=quantize_dynamic`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compress.errors import ConfigError
from compress.models.base import ModelConfig
from compress.models.options import image_shape, positive_int

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RowRNN(nn.Module):
    """Rows of a (C, H, W) image as H steps of C*W features -> RNN -> last step -> Linear."""

    def __init__(self, features: int, hidden: int, layers: int, cell: str, classes: int):
        super().__init__()
        self.rnn = CELLS[cell](features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.permute(0, 2, 1, 3).flatten(2)  # (N, H, C*W)
        out, _ = self.rnn(rows)
        return self.head(out[:, -1])


@dataclass(frozen=True)
class RNNConfig(ModelConfig):
    """LSTM or GRU over the image's rows."""

    name: ClassVar[str] = "rnn"

    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(
                f"model 'rnn': cell must be one of {', '.join(CELLS)}, got {self.cell!r}"
            )
        positive_int("rnn", "hidden", self.hidden)
        positive_int("rnn", "layers", self.layers)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, _, width = image_shape("rnn", input_shape)
        return RowRNN(channels * width, self.hidden, self.layers, self.cell, num_classes)
