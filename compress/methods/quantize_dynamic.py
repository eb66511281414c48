"""Dynamic int8: int8 weights, activations quantized per batch at run time.

No calibration data, no fine-tuning. What `finalize` returns is the converted model and
that is what gets saved, timed and evaluated (on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.errors import ConfigError
from compress.methods.base import Conversion, MethodConfig, MethodContext, Stage, StageBase
from compress.quant.fx_legacy import Recipe, layer_types, quantizable, quantize_dynamic


@dataclass(frozen=True)
class DynamicInt8(MethodConfig):
    """Int8 weights for Linear, LSTM and GRU layers; activations quantized per batch at
    run time. No calibration data, no fine-tuning."""

    name = "quantize_dynamic"
    finetunes = False
    gradual = False
    skip: tuple[str, ...] = ()

    def recipe(self) -> Recipe:
        return Recipe("dynamic", skip=tuple(self.skip))

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return DynamicStage(model, self)


class DynamicStage(StageBase):
    """Nothing to prepare; converts at `finalize`."""

    def __init__(self, model: nn.Module, config: DynamicInt8) -> None:
        self.recipe = config.recipe()
        self.layers = quantizable(model, "dynamic", self.recipe.skip)
        if not self.layers:
            raise ConfigError(
                f"method '{config.name}': the model has no quantizable layer (Linear, LSTM, "
                f"GRU) outside method.skip; its layer types: {', '.join(layer_types(model))}"
            )
        self.float_model: nn.Module | None = None

    def update(self, progress: float) -> bool:
        return False

    def finalize(self, model: nn.Module) -> nn.Module:
        self.float_model = model
        return quantize_dynamic(model, self.recipe)

    def summary(self) -> dict[str, float]:
        return {"quant/bits": 8.0, "quant/layers": float(len(self.layers))}

    def conversion(self) -> Conversion | None:
        if self.float_model is None:
            return None
        return Conversion(self.recipe.as_dict(), self.float_model)
