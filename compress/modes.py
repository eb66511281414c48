"""Switching a model to eval mode for a measurement and back, module by module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
