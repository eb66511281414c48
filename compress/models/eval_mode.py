"""Switching a model to eval mode for a measurement and back, module by module."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards each submodule gets back its own mode.

    Restoring only the top-level flag would put a deliberately frozen submodule (a BN
    layer kept in eval during training, say) back into training mode.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)


def model_device(model: nn.Module) -> torch.device:
    """Where `model` computes: the device of its tensors; the CPU for a model without any
    (a dynamic int8 model keeps its weights packed, outside parameters and buffers)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
