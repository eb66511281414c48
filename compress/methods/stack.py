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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from torch import nn

from compress.artifact.encodings import Entry
from compress.config import require
from compress.methods.base import (
    Conversion,
    MethodConfig,
    MethodContext,
    Stage,
    StageBase,
    apply_method,
    parse_method,
    register_method,
)

log = logging.getLogger(__name__)


class Step(NamedTuple):
    label: str
    config: MethodConfig
    epochs: int | None


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


class StackStage(StageBase):
    """The stages of a stack, once each has been applied and finalized in order."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    def update(self, progress: float) -> bool:
        raise NotImplementedError("a stack is driven stage by stage (see compress.run.pipeline)")

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

    def model_config(self) -> dict[str, Any] | None:
        configs = [c for stage in self.stages if (c := stage.model_config()) is not None]
        return configs[-1] if configs else None


class _AppliedAtOnce(StackStage):
    """A stack applied without fine-tuning: every stage at its full target, in order
    (what a dry run checks, and what `apply_method` gives outside the pipeline)."""

    def __init__(self, model: nn.Module, config: Stack, context: MethodContext) -> None:
        super().__init__([])
        self.model = model
        self.config = config
        self.context = context

    def update(self, progress: float) -> bool:
        if progress < 1 or self.stages:
            return False
        model = self.model
        for step in self.config.steps():
            stage = apply_method(model, step.config, self.context)
            stage.update(1.0)
            model = stage.finalize(model)
            self.stages.append(stage)
        self.model = model
        return True

    def finalize(self, model: nn.Module) -> nn.Module:
        self.update(1.0)
        return self.model


@register_method(Stack)
def stack(model: nn.Module, config: Stack, context: MethodContext) -> StackStage:
    return _AppliedAtOnce(model, config, context)
