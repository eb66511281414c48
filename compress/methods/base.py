"""Methods: a typed config class per method (a `Plugin`) whose `apply` prepares its `Stage`.

Adding a method means one YAML file in conf/method and one module here defining its config
class (with a `name`) and its stage; nothing else is edited.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import torch
from torch import nn

from compress.plugins import Plugin, Registry

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from compress.data import DataBundle


@dataclass(frozen=True)
class MethodConfig(Plugin):
    """Base of every method config; subclasses validate themselves in __post_init__."""

    registry: ClassVar[Registry[MethodConfig]] = Registry("method", "compress.methods")
    #: Whether the method needs a fine-tune phase after it is applied.
    finetunes: ClassVar[bool] = True
    #: Whether the method changes the architecture (removes channels) rather than values.
    structured: ClassVar[bool] = False
    #: Whether partial progress (`update(p)`, p < 1) means something, so that iterative and
    #: gradual schedules can drive it; quantization is applied once, at p = 1.
    gradual: ClassVar[bool] = True
    #: Whether the method zeroes weights through masks (what the lottery schedule rewinds).
    sparsifies: ClassVar[bool] = False

    #: Options an analysis may set from what it found (sensitivity's per-layer amounts).
    accepts: ClassVar[tuple[str, ...]] = ()

    def check(self, finetune_epochs: int) -> None:
        """Raise ConfigError if the method cannot run with this many fine-tune epochs."""

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        """Prepare this method on `model`; nothing is applied before `Stage.update`."""
        raise NotImplementedError

    def steps(self) -> list[Step]:
        """The methods applied in turn: this one alone (a stack lists its stages)."""
        return [Step(self.name, self, None)]

    def patched(self, patch: Mapping[str, Any]) -> MethodConfig:
        """This config with `patch` (from an analysis) applied where the method accepts it."""
        if not patch:
            return self
        if not set(patch) <= set(self.accepts):
            log.info("method '%s' does not take %s from the analysis", self.name, sorted(patch))
            return self
        log.info("method '%s': %s from the analysis", self.name, patch)
        return dataclasses.replace(self, **patch)


class Step(NamedTuple):
    """One method of a pipeline's compression, with its own fine-tune length if set."""

    label: str
    config: MethodConfig
    epochs: int | None


@dataclass(frozen=True)
class MethodContext:
    """What a method may need besides the model and its config."""

    input_shape: tuple[int, ...]
    #: The experiment's data: importance criteria that need gradients or activations
    #: (Taylor, sensitivity) take their batches from `data.train`.
    data: DataBundle | None = None
    batch_size: int = 64
    #: True for the check before training (a throwaway copy at the full target): a stage
    #: may skip work that can no longer refuse the config (QAT's ~30 s conversion).
    dry_run: bool = False


@dataclass(frozen=True)
class Conversion:
    """How a stage turned its float model into a quantized one, so a loader can rebuild it:
    `recipe` (plain values) is what `compress.quant.rebuild` takes, `float_model` the model
    just before conversion (its module shapes are recorded, as for any shrunk model)."""

    recipe: dict[str, Any]
    float_model: nn.Module
    #: The input batches activation ranges were calibrated on (static int8), re-iterable.
    calibration: Callable[[], Iterable[torch.Tensor]] | None = None


class Stage(Protocol):
    """What a handler returns. It starts with nothing applied; a schedule then calls
    `update` (once for one-shot, repeatedly for iterative and gradual schedules)."""

    def update(self, progress: float) -> bool:
        """Compress to `progress` (0 to 1) of the method's target.

        Returns True when parameters were replaced (structured removal), so that an
        optimizer holding the old ones must be rebuilt.
        """

    def after_step(self) -> None:
        """Called after every optimizer step of the fine-tune (e.g. re-apply masks)."""

    def finalize(self, model: nn.Module) -> nn.Module:
        """Turn the simulation into the real compressed model (masks permanent, ...)."""

    def summary(self) -> dict[str, float]:
        """Metrics that describe what the stage did (e.g. sparsity reached)."""

    def artifacts(self, folder: Path) -> list[Path]:
        """Write tables that describe the result (e.g. per-layer sparsity) into `folder`."""

    def training_module(self, model: nn.Module) -> nn.Module:
        """The module the fine-tune trains (a stage may wrap or replace `model`)."""

    def encodings(self) -> dict[str, dict[str, Any]]:
        """Exact compact forms of tensors of the finalized model's state, by state name
        (e.g. N-bit codes and scales), which the artifact writer may store instead."""

    def conversion(self) -> Conversion | None:
        """How the finalized model was converted to real integer kernels, if it was."""

    def model_config(self) -> dict[str, Any] | None:
        """The config of the architecture the stage returns, if not the experiment's own
        (a student); the artifact records it."""

    def decisions(self) -> dict[str, torch.Tensor]:
        """What the stage decided beside the model's own tensors (pruning masks), by name:
        every process of a data-parallel job must hold them alike."""


class StageBase:
    """Defaults for the parts of a `Stage` most stages do not need."""

    def after_step(self) -> None:
        pass

    def summary(self) -> dict[str, float]:
        return {}

    def artifacts(self, folder: Path) -> list[Path]:
        return []

    def training_module(self, model: nn.Module) -> nn.Module:
        return model

    def encodings(self) -> dict[str, dict[str, Any]]:
        return {}

    def conversion(self) -> Conversion | None:
        return None

    def model_config(self) -> dict[str, Any] | None:
        return None

    def decisions(self) -> dict[str, torch.Tensor]:
        return {}


def layer_types(model: nn.Module) -> list[str]:
    """Distinct types of the leaf modules of `model`, for error messages."""
    return sorted({type(m).__name__ for m in model.modules() if not list(m.children())})


def method_names() -> tuple[str, ...]:
    return MethodConfig.registry.names()


def parse_method(values: Mapping[str, Any]) -> MethodConfig:
    """Turn the `method` config section into its typed config (validated)."""
    return MethodConfig.registry.parse(values, "method")


def apply_method(model: nn.Module, config: MethodConfig, context: MethodContext) -> Stage:
    """Prepare the method described by `config` on `model`; nothing is applied until the
    schedule calls the returned stage's `update`."""
    return config.apply(model, context)
