"""Dynamic int8: int8 weights, activations quantized per batch at run time.

Linear layers go through torchao's `quantize_` (int8 dynamic activations, int8 weights,
lowered by Inductor); LSTM/GRU layers, which torchao does not cover, through torch.ao's
eager dynamic quantization (deprecated upstream, kept until torchao covers recurrent
layers). See `compress.quant.linear`. No calibration data, no fine-tuning. What
`finalize` returns is the converted model and that is what gets saved, timed and
evaluated (on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from compress.errors import ConfigError
from compress.methods.base import (
    Conversion,
    MethodConfig,
    MethodContext,
    Stage,
    StageBase,
    layer_types,
)
from compress.quant import linear


@dataclass(frozen=True)
class DynamicInt8(MethodConfig):
    """Int8 weights for Linear, LSTM and GRU layers; activations quantized per batch at
    run time. No calibration data, no fine-tuning."""

    name = "quantize_dynamic"
    finetunes = False
    gradual = False
    skip: tuple[str, ...] = ()

    def recipe(self, model: nn.Module) -> dict[str, Any]:
        """How `model` is converted (what the artifact records)."""
        return linear.recipe(model, "dynamic", self.skip, recurrent=True)

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return LinearInt8Stage(model, self, "Linear, LSTM, GRU")


class LinearInt8Stage(StageBase):
    """Nothing to prepare; converts at `finalize` by the config's recipe. `wanted` names
    the layer types the method quantizes (for the error when the model has none)."""

    def __init__(self, model: nn.Module, config: Any, wanted: str) -> None:
        self.recipe: dict[str, Any] = config.recipe(model)
        self.layers = [*self.recipe.get("layers", []), *self.recipe["recurrent"]]
        if not self.layers:
            raise ConfigError(
                f"method '{config.name}': the model has no quantizable layer ({wanted}) "
                f"outside method.skip; its layer types: {', '.join(layer_types(model))}"
            )
        self.float_model: nn.Module | None = None

    def update(self, progress: float) -> bool:
        return False

    def finalize(self, model: nn.Module) -> nn.Module:
        self.float_model = model
        return linear.quantize(model, self.recipe)

    def summary(self) -> dict[str, float]:
        figures = {"quant/bits": 8.0, "quant/layers": float(len(self.layers))}
        if self.recipe.get("scheme") == "dynamic":
            figures["quant/reduce_range"] = float(self.recipe["reduce_range"])
        return figures

    def conversion(self) -> Conversion | None:
        if self.float_model is None:
            return None
        return Conversion(dict(self.recipe), self.float_model)
