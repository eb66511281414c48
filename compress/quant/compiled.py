"""A converted model as it is meant to run: lowered by Inductor, compiled on first use.

torchao's int8 models are graphs of quantize/dequantize and float ops (PT2E) or float
modules holding int8 tensor subclasses (`quantize_`): run as they are, in eager PyTorch,
they simulate int8 and are slower than fp32. Inductor with freezing folds the weights
into oneDNN's prepacked int8 kernels; that lowered model is what a run times, evaluates
and returns. Compilation happens on the first forward of each batch size (shapes are
specialized: Inductor's dynamic-shape int8 convolutions are not reliable on the CPU), and
its seconds are counted apart (`compile_seconds`), never in a latency.

The int8 patterns Inductor matches are torchao's, registered when its x86 inductor
quantizer module is imported; a model that never went through PT2E in this process
(dynamic int8, a loaded artifact) would compile without them: torchao's dynamic int8
Linear then runs as `aten._int_mm` plus separate rescaling, slower than eager fp32 at
batch 256 (the MNIST ViT: 0.94x; 1.07x once the patterns turn it into oneDNN's int8
linear). So the first compile imports that module itself, when torchao is there.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn


def register_int8_lowerings() -> bool:
    """Register torchao's Inductor int8 patterns (PT2E quantize/dequantize pairs around
    conv and linear, torchao's dynamic int8 `_int_mm`) by importing the module that does it
    on import; False where torchao is not installed (the graph then runs unmatched)."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    except ImportError:
        return False
    return True


class CompiledInference(nn.Module):
    """`eager` (kept as a submodule: its state, exports and footprint stay reachable)
    run through `torch.compile` with Inductor's freezing, in inference mode."""

    def __init__(self, eager: nn.Module) -> None:
        super().__init__()
        self.eager = eager
        self.compile_seconds = 0.0
        self._compiled: Any = None
        self._shapes: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        shape = tuple(x.shape)
        if shape in self._shapes:
            # Compiled for this shape: run it directly. Entering the config patch and the
            # warning filter on every call cost ~0.15 ms a call here (half of a small
            # model's time at batch 1).
            with torch.no_grad():
                return self._compiled(x)
        if self._compiled is None:
            register_int8_lowerings()
            self._compiled = torch.compile(self.eager, dynamic=False)
        started = time.perf_counter()
        # Freezing is what lowers the int8 weights to prepacked kernels; it is read when a
        # graph compiles, so it must be on for every first call of a new shape.
        with torch.no_grad(), inductor_config.patch(freezing=True), warnings.catch_warnings():
            # Inductor's own int8 conv lowering builds a tensor with torch.tensor(tensor)
            # and warns about that, once per layer: torch's code, nothing a user can change.
            warnings.filterwarnings(
                "ignore", message="To copy construct from a tensor", module=r"torch\._inductor"
            )
            out = self._compiled(x)
        self._shapes.add(shape)
        self.compile_seconds += time.perf_counter() - started
        return out

    def train(self, mode: bool = True) -> CompiledInference:
        """A lowered int8 model only infers; it stays in eval mode."""
        return super().train(False)
