"""A recurrent classifier: an image read row by row as a sequence (the classic MNIST RNN).

Its LSTM or GRU and its Linear head are what dynamic int8 quantization turns into int8
kernels (`method=quantize_dynamic`).
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import ConfigError
from compress.models.registry import image_shape, positive_int, register

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


@register("rnn")
def rnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    cell: str = "lstm",
    hidden: int = 128,
    layers: int = 1,
) -> nn.Module:
    """LSTM or GRU over the image's rows."""
    channels, _, width = image_shape("rnn", input_shape)
    if cell not in CELLS:
        raise ConfigError(f"model 'rnn': cell must be one of {', '.join(CELLS)}, got {cell!r}")
    return RowRNN(
        channels * width,
        positive_int("rnn", "hidden", hidden),
        positive_int("rnn", "layers", layers),
        cell,
        num_classes,
    )
