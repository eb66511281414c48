"""Static int8 (`quantize_static`, calibrated) and `qat`, through torchao's PT2E flow.

What these return is the converted model — int8 weights, lowered by Inductor to oneDNN's
int8 kernels — and that is what gets saved, timed and evaluated (see `compress.quant.pt2e`
for the backend). Converted models run on the CPU: these kernels are x86 ones.

Weights that are exactly zero (a pruned model, in a stack) stay zero: QAT holds them
there during fine-tuning, and their int8 codes are stored sparsely.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

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
    layer_types,
)
from compress.models.eval_mode import model_device
from compress.quant.compiled import CompiledInference
from compress.quant.pt2e import (
    OBSERVERS,
    Pt2eRecipe,
    calibrate,
    check_cpu,
    convert,
    cpu_needs_reduce_range,
    prepare,
    quantizable,
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
        require(
            isinstance(self.reduce_range, bool) or self.reduce_range == "auto",
            f"method.reduce_range must be auto, true or false, got {self.reduce_range!r}",
        )
        require(
            self.symmetric,
            "method.symmetric=false: the x86 int8 kernels (oneDNN) take symmetric weights "
            "only (zero point 0); activations are affine either way",
        )
        require(
            self.per_channel or self.kind == "static",
            "method.per_channel=false: the x86 quantizer's QAT has per-channel weights only",
        )
        check_cpu(self.recipe())

    def recipe(self) -> Pt2eRecipe:
        reduce = cpu_needs_reduce_range() if self.reduce_range == "auto" else self.reduce_range
        return Pt2eRecipe(
            self.kind,
            observer=self.observer,
            per_channel=self.per_channel,
            reduce_range=bool(reduce),
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
        return Int8Stage(model, self, context)


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
        return Int8Stage(model, self, context)


Int8Config = StaticInt8 | QuantAwareTraining


class Int8Stage(StageBase):
    """Exports and prepares (observers or fake quantization) at `update(1)`, converts at
    `finalize`."""

    def __init__(self, model: nn.Module, config: Int8Config, context: MethodContext) -> None:
        self.config = config
        self.recipe = config.recipe()
        self.model = model
        self.context = context
        self.layers = quantizable(model, self.recipe.skip)
        if not self.layers:
            raise ConfigError(
                f"method '{config.name}': the model has no quantizable layer (Conv1d/2d/3d, "
                f"Linear) outside method.skip; its layer types: {', '.join(layer_types(model))}"
            )
        self.prepared: nn.Module | None = None
        self.zeros: dict[str, torch.Tensor] = {}
        self.float_model: nn.Module | None = None
        self.calibrated = 0

    def _calibration(self) -> Iterator[torch.Tensor]:
        data = self.context.data
        if data is None:
            raise ConfigError("static quantization needs calibration data")
        batches = data.train.loader(self.context.batch_size)
        return (batch.x for batch in itertools.islice(batches, self._batches()))

    def _batches(self) -> int:
        return getattr(self.config, "calibration_batches", 0)

    def update(self, progress: float) -> bool:
        if progress < 1 or self.prepared is not None:
            return False
        shape = (2, *self.context.input_shape)  # batch 2: export keeps the batch size free
        example = torch.zeros(shape, device=model_device(self.model))
        self.prepared = prepare(self.model, self.recipe, example, self.config.name)
        if self.recipe.kind == "static":
            self.calibrated = calibrate(self.prepared, self._calibration(), self._batches())
        else:
            self.zeros = {
                name: weight.detach() == 0
                for name, weight in self.prepared.named_parameters()
                if weight.dim() > 1 and bool((weight == 0).any())
            }
        return True

    def after_step(self) -> None:
        if self.prepared is not None and self.zeros:
            weights = dict(self.prepared.named_parameters())
            with torch.no_grad():
                for name, zero in self.zeros.items():
                    weights[name].masked_fill_(zero, 0.0)

    def training_module(self, model: nn.Module) -> nn.Module:
        return self.prepared if self.prepared is not None else model

    def finalize(self, model: nn.Module) -> nn.Module:
        if self.prepared is None:
            self.update(1.0)
        assert self.prepared is not None
        if self.recipe.kind == "qat":  # the float model as QAT left it: its trained weights
            _copy_matching(self.prepared, model)
        self.float_model = model
        if self.context.dry_run and self.recipe.kind == "qat":
            # Export and prepare, which can refuse the model, have run; torchao's QAT
            # conversion (its conv+BN folding) takes ~30 s and cannot refuse anything more.
            return self.prepared
        # A QAT graph converted before it trained is a test's; a run trains >= 1 epoch.
        return CompiledInference(convert(self.prepared, unobserved_ok=self.recipe.kind == "qat"))

    def summary(self) -> dict[str, float]:
        metrics = {
            "quant/bits": 8.0,
            "quant/layers": float(len(self.layers)),
            "quant/reduce_range": float(self.recipe.reduce_range),
        }
        if self.recipe.kind == "static":
            metrics["quant/calibration_batches"] = float(self.calibrated)
        return metrics

    def conversion(self) -> Conversion | None:
        if self.float_model is None:
            return None
        calibration = self._calibration if self.recipe.kind == "static" else None
        return Conversion(self.recipe.as_dict(), self.float_model, calibration)


def _copy_matching(source: nn.Module, target: nn.Module) -> None:
    """Copy `source`'s tensors into `target`'s of the same name and shape."""
    theirs = source.state_dict()
    with torch.no_grad():
        for name, tensor in target.state_dict().items():
            if name in theirs and theirs[name].shape == tensor.shape:
                tensor.copy_(theirs[name])
