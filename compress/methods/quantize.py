"""Real int8 models: `quantize_dynamic`, `quantize_static` (calibrated) and `qat`.

What these return is the converted model — int8 weights, int8 kernels — and that is what
gets saved, timed and evaluated (see `compress.quant.int8` for the backend). Converted
models run on the CPU: int8 kernels of torch.ao exist for x86 and ARM only.

Weights that are exactly zero (a pruned model, in a stack) stay zero: QAT holds them
there during fine-tuning, and their int8 codes are stored sparsely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from compress.config import require
from compress.errors import ConfigError
from compress.methods.base import (
    Conversion,
    MethodConfig,
    MethodContext,
    Stage,
    StageBase,
)
from compress.methods.masks import PRUNABLE_TYPES
from compress.models.eval_mode import model_device
from compress.quant.int8 import (
    OBSERVERS,
    Recipe,
    calibrate,
    convert,
    cpu_needs_reduce_range,
    layer_types,
    prepare,
    quantizable,
    quantize_dynamic,
)


def _reduce_range(value: bool | str) -> bool:
    return cpu_needs_reduce_range() if value == "auto" else bool(value)


def _check_reduce_range(value: bool | str) -> None:
    require(
        isinstance(value, bool) or value == "auto",
        f"method.reduce_range must be auto, true or false, got {value!r}",
    )


@dataclass(frozen=True)
class _Int8Options(MethodConfig):
    """What static quantization and QAT share: how ranges are observed and stored."""

    kind: ClassVar[str]
    gradual = False
    observer: str = "histogram"
    per_channel: bool = True
    symmetric: bool = True
    reduce_range: bool | str = "auto"
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        allowed = OBSERVERS if self.kind == "static" else ("minmax", "moving_average")
        require(
            self.observer in allowed,
            f"method.observer '{self.observer}' cannot drive method '{self.name}'; "
            f"choose one of: {', '.join(allowed)}",
        )
        _check_reduce_range(self.reduce_range)

    def recipe(self) -> Recipe:
        return Recipe(
            self.kind,
            observer=self.observer,
            per_channel=self.per_channel,
            symmetric=self.symmetric,
            reduce_range=_reduce_range(self.reduce_range),
            skip=tuple(self.skip),
        )


@dataclass(frozen=True)
class StaticInt8(_Int8Options):
    """Int8 weights and activations; activation ranges from `calibration_batches` batches
    of the train split. `skip` leaves layers in float (mixed precision)."""

    name = "quantize_static"
    kind = "static"
    finetunes = False
    calibration_batches: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.calibration_batches >= 1,
            f"method.calibration_batches must be >= 1 (static quantization needs data to "
            f"set activation ranges), got {self.calibration_batches}",
        )

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return quantize_static_int8(model, self, context)


@dataclass(frozen=True)
class QuantAwareTraining(_Int8Options):
    """Fake int8 quantization of weights and activations during the fine-tune (the
    network learns around the rounding), then conversion to a real int8 model."""

    name = "qat"
    kind = "qat"
    observer: str = "moving_average"

    def check(self, finetune_epochs: int) -> None:
        require(
            finetune_epochs >= 1,
            "method 'qat' trains with fake quantization: schedule.finetune.epochs must be "
            f">= 1, got {finetune_epochs}",
        )

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return quantization_aware_training(model, self, context)


Int8Config = StaticInt8 | QuantAwareTraining


class Int8Stage(StageBase):
    """Prepares (observers or fake quantization) at `update(1)`, converts at `finalize`."""

    def __init__(self, model: nn.Module, config: Int8Config, context: MethodContext) -> None:
        self.config = config
        self.recipe = config.recipe()
        self.model = model
        self.context = context
        self.layers = quantizable(model, self.recipe.kind, self.recipe.skip)
        if not self.layers:
            wanted = (
                "Linear, LSTM, GRU" if self.recipe.kind == "dynamic" else "Conv1d/2d/3d, Linear"
            )
            raise ConfigError(
                f"method '{config.name}': the model has no quantizable layer ({wanted}) "
                f"outside method.skip; its layer types: {', '.join(layer_types(model))}"
            )
        self.prepared: nn.Module | None = None
        self.zeros: dict[str, torch.Tensor] = {}
        self.float_model: nn.Module | None = None

    def update(self, progress: float) -> bool:
        if progress < 1 or self.prepared is not None or self.recipe.kind == "dynamic":
            return False
        example = torch.zeros((1, *self.context.input_shape), device=model_device(self.model))
        self.prepared = prepare(self.model, self.recipe, example)
        if self.recipe.kind == "static":
            data = self.context.data
            require(data is not None, "static quantization needs calibration data")
            assert data is not None
            calibrate(
                self.prepared,
                data.train.loader(self.context.batch_size),
                self.config.calibration_batches,  # type: ignore[union-attr]
            )
        else:
            self.zeros = _zero_masks(self.prepared)
        return True

    def after_step(self) -> None:
        if self.prepared is not None and self.zeros:
            with torch.no_grad():
                for path, zero in self.zeros.items():
                    self.prepared.get_submodule(path).weight.masked_fill_(zero, 0.0)

    def training_module(self, model: nn.Module) -> nn.Module:
        return self.prepared if self.prepared is not None else model

    def finalize(self, model: nn.Module) -> nn.Module:
        self.float_model = model
        if self.recipe.kind == "dynamic":
            return quantize_dynamic(model, self.recipe)
        if self.prepared is None:
            self.update(1.0)
        assert self.prepared is not None
        return convert(self.prepared)

    def summary(self) -> dict[str, float]:
        return {
            "quant/bits": 8.0,
            "quant/layers": float(len(self.layers)),
            "quant/reduce_range": float(self.recipe.reduce_range),
        }

    def conversion(self) -> Conversion | None:
        if self.float_model is None:
            return None
        return Conversion(self.recipe.as_dict(), self.float_model)


def _zero_masks(prepared: nn.Module) -> dict[str, torch.Tensor]:
    """Where the weights of conv and linear layers are exactly zero (pruned), by path."""
    masks: dict[str, Any] = {}
    for path, module in prepared.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, PRUNABLE_TYPES) and isinstance(weight, torch.Tensor):
            zero = weight.detach() == 0
            if bool(zero.any()):
                masks[path] = zero
    return masks


def quantize_static_int8(model: nn.Module, config: StaticInt8, context: MethodContext) -> Int8Stage:
    return Int8Stage(model, config, context)


def quantization_aware_training(
    model: nn.Module, config: QuantAwareTraining, context: MethodContext
) -> Int8Stage:
    return Int8Stage(model, config, context)
