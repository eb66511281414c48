"""Weight-only int8 for Linear layers through torchao (`Int8WeightOnlyConfig`).

Int8 weights with one scale per output channel, float32 activations and matmul: the
artifact is ~4x smaller, the model no faster on the CPU (see `compress.quant.linear`).
LSTM/GRU layers stay float. No calibration data, no fine-tuning.

`bits: 4` is refused: torchao 0.18's `Int4WeightOnlyConfig` has no x86 CPU layout
(plain and preshuffled need the mslk kernels, tile_packed_to_4d CUDA, plain_int32 refuses
the CPU), and its prototype CPU layout (`Int4OpaqueTensor`, aten's
`_weight_int4pack_mm_for_cpu`) ran float32 Linear layers over 100x slower than fp32 here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from compress.config import require
from compress.methods.base import MethodConfig, MethodContext, Stage
from compress.methods.quantize_dynamic import LinearInt8Stage
from compress.quant import linear

BITS = (8, 4)
#: In-features per int4 scale that torchao's int4 layouts take.
GROUP_SIZES = (32, 64, 128)
INT4_REFUSED = (
    "method.bits=4 cannot run here: torchao has no x86 CPU int4 kernel for float32 models "
    "(Int4WeightOnlyConfig's layouts need CUDA or mslk; its prototype CPU layout ran >100x "
    "slower than fp32); use bits=8, or method=quantize_weights for 4-bit packed weights"
)


@dataclass(frozen=True)
class WeightOnlyInt8(MethodConfig):
    """Int8 weights for Linear layers, float compute; `skip` leaves layers in float."""

    name = "quantize_weight_only"
    finetunes = False
    gradual = False
    bits: int = 8
    group_size: int = 128
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(self.bits in BITS, f"method.bits must be 8 or 4, got {self.bits}")
        require(
            self.group_size in GROUP_SIZES,
            f"method.group_size must be one of {', '.join(map(str, GROUP_SIZES))} "
            f"(in-features sharing one int4 scale), got {self.group_size}",
        )
        require(self.bits == 8, INT4_REFUSED)

    def recipe(self, model: nn.Module) -> dict[str, Any]:
        """How `model` is converted (what the artifact records)."""
        return linear.recipe(model, "weight_only", self.skip)

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return LinearInt8Stage(model, self, "Linear")
