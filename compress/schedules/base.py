"""Schedules: when a method's compression happens during fine-tuning.

A schedule drives a `Stage` with `update(progress)`, progress being the share of the
method's target applied so far, and owns the fine-tune loop around those updates. Each
schedule is a `Plugin` (one module in this package, one YAML file in conf/schedule) whose
`run` does its loop with the helpers of `Tuning`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from compress.data import DataBundle
from compress.errors import ConfigError
from compress.methods import MethodConfig, Stage
from compress.plugins import Plugin, Registry
from compress.train.callbacks import EpochStats
from compress.train.loop import Objective, fit
from compress.train.recipe import RuntimeConfig, TrainRecipe

#: Recipe keys in the schedule section; everything else belongs to the schedule itself.
RECIPES = ("train", "finetune")


@dataclass(frozen=True)
class ScheduleContext:
    """What a schedule's fine-tune needs besides the stage and the model."""

    data: DataBundle
    recipe: TrainRecipe  # the fine-tune's
    runtime: RuntimeConfig
    seed: int
    #: The loss instead of cross-entropy (distillation), if any.
    objective: Objective | None = None
    #: What a lottery rewinds to: the weights the baseline started from, the recipe and
    #: seed that trained it, and how to build its architecture afresh.
    initial_state: Mapping[str, torch.Tensor] | None = None
    baseline_recipe: TrainRecipe | None = None
    baseline_seed: int = 0
    new_model: Callable[[], nn.Module] | None = None


@dataclass
class Finetune:
    """What the fine-tune phase produced: epoch statistics and the sparsity it reached."""

    history: list[EpochStats] = dataclasses.field(default_factory=list)
    sparsity: list[tuple[int, float]] = dataclasses.field(default_factory=list)

    def extend(self, later: Finetune) -> None:
        """Append a later fine-tune (the next stage of a stack), epochs and steps after ours."""
        epochs = len(self.history)
        steps = self.sparsity[-1][0] + 1 if self.sparsity else 0
        self.history += [dataclasses.replace(s, epoch=s.epoch + epochs) for s in later.history]
        self.sparsity += [(step + steps, value) for step, value in later.sparsity]


@dataclass(frozen=True)
class ScheduleConfig(Plugin):
    registry: ClassVar[Registry[ScheduleConfig]] = Registry("schedule", "compress.schedules")

    def check(self, method: MethodConfig, finetune: TrainRecipe, steps_per_epoch: int) -> None:
        """Raise ConfigError if this schedule cannot run with this method and fine-tune."""
        if self.name != "oneshot" and not method.gradual:
            raise ConfigError(
                f"schedule '{self.name}' applies a method in steps; method '{method.name}' "
                "is applied once: use schedule=oneshot"
            )

    def run(self, stage: Stage, model: nn.Module, context: ScheduleContext) -> Finetune:
        """Compress `model` through `stage` to its full target, fine-tuning as scheduled."""
        raise NotImplementedError


def parse_schedule(section: Mapping[str, Any]) -> ScheduleConfig:
    """The schedule's own options (everything in `schedule` but the recipes)."""
    values = {k: v for k, v in section.items() if k not in RECIPES}
    return ScheduleConfig.registry.parse(values, "schedule")


class Tuning:
    """One stage's fine-tune under way: its updates, its training and what they produced."""

    def __init__(self, stage: Stage, model: nn.Module, context: ScheduleContext) -> None:
        self.stage = stage
        self.model = model
        self.context = context
        self.result = Finetune()
        self.step = 0
        self.steps_per_epoch = math.ceil(len(context.data.train) / context.recipe.batch_size)

    def update(self, fraction: float) -> bool:
        """Compress to `fraction` of the target, recording the sparsity reached."""
        replaced = self.stage.update(fraction)
        if "sparsity" in (summary := self.stage.summary()):
            self.result.sparsity.append((self.step, summary["sparsity"]))
        return replaced

    def count_step(self) -> bool:
        self.step += 1
        self.stage.after_step()
        return False

    def train(self, epochs: int, label: str, after_step: Callable[[], bool] | None = None) -> None:
        """Fine-tune `epochs` epochs of the recipe (its epochs numbered after the last)."""
        if epochs <= 0:
            return
        context, offset = self.context, len(self.result.history)
        stats = fit(
            self.stage.training_module(self.model),
            context.data,
            dataclasses.replace(context.recipe, epochs=epochs),
            context.runtime,
            seed=context.seed + offset,
            label=label,
            after_step=after_step or self.count_step,
            objective=context.objective,
        )
        self.result.history += [dataclasses.replace(s, epoch=s.epoch + offset) for s in stats]
