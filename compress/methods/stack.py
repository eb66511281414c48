"""`method=stack`: methods applied one after another, each fine-tuned in turn.

Deep Compression is `prune` then `weight_sharing`; `prune` then `quantize_static` gives a
sparse int8 model. `stages` maps a label to a method's options, in order:

    stages:
      prune: {amount: 0.92, epochs: 40}      # label = method name unless `name` is given
      weight_sharing: {bits: 5, epochs: 10}

`epochs` (optional) is a stage's own fine-tune length (default: schedule.finetune.epochs).
The configured schedule drives the first stage; later stages are applied at once and
fine-tuned (one-shot). A stage that converts to int8 must be the last. Zeros left by
earlier stages stay zero through later ones, and the artifact stores each tensor in the
last stage's encoding of it, so size ratios multiply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.artifact.encodings import Entry
from compress.config import require
from compress.methods.base import (
    Conversion,
    MethodConfig,
    MethodContext,
    Stage,
    StageBase,
    Step,
    parse_method,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stack(MethodConfig):
    name = "stack"
    stages: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        steps = self.steps()
        require(len(steps) >= 1, "method.stages must name at least one method")
        for step in steps[:-1]:
            require(
                not hasattr(step.config, "recipe"),
                f"method.stages: '{step.label}' converts to int8 and must be the last stage",
            )

    def steps(self) -> list[Step]:
        """The stages in order, each parsed and validated as a method of its own."""
        steps = []
        for label, options in (self.stages or {}).items():
            values = dict(options or {})
            epochs = values.pop("epochs", None)
            require(
                epochs is None or (isinstance(epochs, int) and epochs >= 0),
                f"method.stages.{label}.epochs must be an integer >= 0, got {epochs!r}",
            )
            values.setdefault("name", label)
            require(values["name"] != self.name, "method.stages cannot nest another stack")
            steps.append(Step(str(label), parse_method(values), epochs))
        return steps

    @property
    def finetunes(self) -> bool:  # type: ignore[override]
        return any(step.config.finetunes for step in self.steps())

    @property
    def gradual(self) -> bool:  # type: ignore[override]
        return self.steps()[0].config.gradual

    def check(self, finetune_epochs: int) -> None:
        for step in self.steps():
            step.config.check(finetune_epochs if step.epochs is None else step.epochs)

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return stack(model, self, context)


#: How a pipeline fine-tunes a stage it has just applied (index, step, stage, model); it
#: must bring the stage to its full target.
FineTune = Callable[[int, Step, Stage, nn.Module], None]


def apply_steps(
    model: nn.Module,
    method: MethodConfig,
    context: MethodContext,
    fine_tune: FineTune | None = None,
) -> tuple[nn.Module, Stage]:
    """Apply `method`'s steps in order, each fine-tuned by `fine_tune` (or applied at its
    full target when there is none) and finalized; return the real model and its stage
    (the one stage, or the stack's stages together)."""
    stages: list[Stage] = []
    for index, step in enumerate(method.steps()):
        stage = step.config.apply(model, context)
        if fine_tune is None:
            stage.update(1.0)
        else:
            fine_tune(index, step, stage, model)
        model = stage.finalize(model)
        stages.append(stage)
    return model, stages[0] if len(stages) == 1 else StackStage(stages)


class StackStage(StageBase):
    """The stages of a stack, once each has been applied and finalized in order."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    def update(self, progress: float) -> bool:
        raise NotImplementedError("a stack is driven stage by stage (see apply_steps)")

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def summary(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for stage in self.stages:
            merged |= stage.summary()
        return merged

    def artifacts(self, folder: Path) -> list[Path]:
        return [path for stage in self.stages for path in stage.artifacts(folder)]

    def encodings(self) -> dict[str, Entry]:
        merged: dict[str, Entry] = {}
        for stage in self.stages:
            merged |= stage.encodings()
        return merged

    def conversion(self) -> Conversion | None:
        return self.stages[-1].conversion()

    def decisions(self) -> dict[str, torch.Tensor]:
        return {
            f"{index}.{name}": tensor
            for index, stage in enumerate(self.stages)
            for name, tensor in stage.decisions().items()
        }

    def model_config(self) -> dict[str, Any] | None:
        configs = [c for stage in self.stages if (c := stage.model_config()) is not None]
        return configs[-1] if configs else None


class _AppliedAtOnce(StackStage):
    """A stack prepared by `apply` outside a pipeline: at `update(1.0)` every stage is
    applied at its full target, in order, through `apply_steps`."""

    def __init__(self, model: nn.Module, config: Stack, context: MethodContext) -> None:
        super().__init__([])
        self.model = model
        self.config = config
        self.context = context

    def update(self, progress: float) -> bool:
        if progress < 1 or self.stages:
            return False
        self.model, stage = apply_steps(self.model, self.config, self.context)
        self.stages = stage.stages if isinstance(stage, StackStage) else [stage]
        return True

    def finalize(self, model: nn.Module) -> nn.Module:
        self.update(1.0)
        return self.model


def stack(model: nn.Module, config: Stack, context: MethodContext) -> StackStage:
    return _AppliedAtOnce(model, config, context)
