"""Weight-only quantization: `quantize_weights` (N-bit grids); `weight_sharing` (k-means) is
in `compress.methods.weight_sharing` and shares the per-layer bit settings below.

Both store fewer bits per weight in the artifact — 4-bit weights take 4 bits, a
32-entry codebook 5 bits a code — and both compute in float32 at run time: on a CPU the
model is smaller, not faster (that is what `quantize_static` / `qat` are for).

- quantize_weights: every conv/linear weight on a `bits`-bit affine grid, per output
  channel or per group of inputs, with float16 scales. Round-to-nearest after training
  (PTQ), or `qat: true` for fake quantization with a straight-through estimator during
  the fine-tune. `layers` sets bits per module-path pattern (mixed precision).
- weight_sharing: k = 2**bits centroids per layer from k-means over its nonzero weights
  (linear init, Han et al.); the fine-tune trains the centroids while codes stay fixed.
  Han et al. give each centroid the sum of its weights' gradients; here it is divided by
  the cluster's size (the mean), or a cluster of hundreds of weights takes steps
  hundreds of times larger than one weight would, and at a usual fine-tune rate the
  centroids cross each other and scramble the layer.

Weights that are zero (pruned before, in a stack) stay zero and are stored sparsely.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.artifact.encodings import Entry, packed_entry
from compress.config import require
from compress.errors import ConfigError
from compress.methods.base import MethodConfig, MethodContext, Stage, StageBase
from compress.methods.masks import matching, prunable_weights
from compress.quant.grid import MAX_BITS, MIN_BITS, Grid, fake_quantize, grid_weights, quantize

GRANULARITIES = ("channel", "group")


def check_bits(bits: int, option: str, low: int = MIN_BITS, high: int = MAX_BITS) -> None:
    require(
        isinstance(bits, int) and low <= bits <= high,
        f"{option} must be an integer in {low}..{high}, got {bits}",
    )


def check_layer_bits(config: Any, low: int = MIN_BITS) -> None:
    """Normalise `config.layers` (keys as strings) and check each layer's bits."""
    layers = {str(k): v for k, v in (config.layers or {}).items()}
    object.__setattr__(config, "layers", layers)
    for pattern, bits in layers.items():
        check_bits(bits, f"method.layers['{pattern}']", low)


def layer_bits(
    model: nn.Module, bits: int, overrides: dict[str, int], exclude: tuple[str, ...], method: str
) -> dict[str, int]:
    """Bits for each conv/linear layer not excluded; the last matching override wins."""
    paths = list(prunable_weights(model))
    if not paths:
        raise ConfigError(f"method '{method}': the model has no conv or linear layer to quantize")
    excluded = {p for pattern in exclude for p in matching(paths, pattern, "method.exclude")}
    chosen = {p: bits for p in paths if p not in excluded}
    for pattern, value in overrides.items():
        for path in matching(paths, pattern, "method.layers"):
            if path in chosen:
                chosen[path] = value
    return chosen


def group_size_for(cols: int, wanted: int) -> int:
    """The largest group size <= `wanted` that divides a row of `cols` inputs."""
    return max(d for d in range(1, min(wanted, cols) + 1) if cols % d == 0)


@dataclass(frozen=True)
class WeightQuantization(MethodConfig):
    name = "quantize_weights"
    gradual = False
    bits: int = 4
    granularity: str = "channel"
    group_size: int = 32
    symmetric: bool = True
    qat: bool = False
    layers: dict[str | int, int] | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_bits(self.bits, "method.bits")
        require(
            self.granularity in GRANULARITIES,
            f"method.granularity '{self.granularity}' unknown; choose one of: "
            f"{', '.join(GRANULARITIES)}",
        )
        require(self.group_size >= 1, f"method.group_size must be >= 1, got {self.group_size}")
        check_layer_bits(self)

    @property
    def finetunes(self) -> bool:  # type: ignore[override]
        return self.qat

    def check(self, finetune_epochs: int) -> None:
        require(
            not self.qat or finetune_epochs >= 1,
            "method.qat trains with fake quantization: schedule.finetune.epochs must be >= 1, "
            f"got {finetune_epochs}",
        )

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return quantize_weights(model, self, context)


class _FakeQuantized(nn.Module):
    """Parametrization: the weight on its grid in the forward pass (straight-through)."""

    def __init__(self, bits: int, symmetric: bool, group_size: int | None, keep: torch.Tensor):
        super().__init__()
        self.bits, self.symmetric, self.group_size = bits, symmetric, group_size
        self.register_buffer("keep", keep)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        weight = weight * self.keep
        return fake_quantize(
            weight, self.bits, symmetric=self.symmetric, group_size=self.group_size
        )


class BitsStage(StageBase):
    """Per-layer bits: their weighted mean as `quant/bits` and a per-layer table."""

    bits: dict[str, int]
    modules: dict[str, nn.Module]

    def summary(self) -> dict[str, float]:
        sizes = {p: self.modules[p].weight.numel() for p in self.bits}
        total = sum(sizes.values())
        return {"quant/bits": sum(self.bits[p] * n for p, n in sizes.items()) / total}

    def artifacts(self, folder: Path) -> list[Path]:
        return [_bits_table(folder / "layer_bits.csv", self.bits, self.modules)]


class WeightGridStage(BitsStage):
    def __init__(self, model: nn.Module, config: WeightQuantization) -> None:
        self.config = config
        self.modules = dict(model.named_modules())
        self.bits = layer_bits(
            model, config.bits, config.layers or {}, tuple(config.exclude), config.name
        )
        self.grids: dict[str, Grid] = {}
        self.applied = False

    def _group(self, path: str) -> int | None:
        if self.config.granularity == "channel":
            return None
        weight = self.modules[path].weight
        return group_size_for(weight[0].numel(), self.config.group_size)

    def update(self, progress: float) -> bool:
        if progress < 1 or self.applied:
            return False
        self.applied = True
        if not self.config.qat:
            self._round()
            return False
        for path, bits in self.bits.items():
            module = self.modules[path]
            keep = (module.weight.detach() != 0).to(module.weight.dtype)
            fake = _FakeQuantized(bits, self.config.symmetric, self._group(path), keep)
            parametrize.register_parametrization(module, "weight", fake)
        return True

    @torch.no_grad()
    def _round(self) -> None:
        for path, bits in self.bits.items():
            weight = self.modules[path].weight
            grid = quantize(
                weight, bits, symmetric=self.config.symmetric, group_size=self._group(path)
            )
            weight.copy_(grid_weights(grid).to(weight.device))
            self.grids[path] = grid

    def finalize(self, model: nn.Module) -> nn.Module:
        if not self.applied:
            self.update(1.0)
        if self.config.qat:
            for path in self.bits:
                module = self.modules[path]
                keep = module.parametrizations.weight[0].keep
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                with torch.no_grad():
                    module.weight.mul_(keep)
            self._round()
        return model

    def encodings(self) -> dict[str, Entry]:
        return {f"{path}.weight": packed_entry(grid) for path, grid in self.grids.items()}


def _bits_table(path: Path, bits: dict[str, int], modules: dict[str, Any]) -> Path:
    """Per-layer CSV: layer, weights, bits (layers left in float are not listed)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "weights", "bits"])
        for layer, b in bits.items():
            writer.writerow([layer, modules[layer].weight.numel(), b])
    return path


def quantize_weights(
    model: nn.Module, config: WeightQuantization, context: MethodContext
) -> WeightGridStage:
    return WeightGridStage(model, config)
