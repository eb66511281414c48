"""Schedules: when a method's compression happens during fine-tuning.

A schedule drives a `Stage` with `update(progress)`, progress being the share of the
method's target applied so far, and runs the fine-tune around those updates:

- oneshot:   compress fully, then fine-tune;
- iterative: k rounds of (compress to i/k of the target, retrain) (Han et al. 2015);
- agp:       Zhu & Gupta's cubic ramp s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3,
             updated every `frequency` steps between epochs `begin` and `end`;
- lottery:   iterative magnitude pruning that rewinds the surviving weights to their
             initial values (or to epoch k, "late rewinding") before each retraining;
             `reinit: true` is the control that re-initialises them randomly instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from compress.config import from_mapping, require
from compress.data import DataBundle
from compress.errors import ConfigError
from compress.methods import MethodConfig, Stage
from compress.train.loop import EpochStats, Objective, fit
from compress.train.progress import Progress
from compress.train.recipe import RuntimeConfig, TrainRecipe

#: Recipe keys in the schedule section; everything else belongs to the schedule itself.
RECIPES = ("train", "finetune")


@dataclass(frozen=True)
class ScheduleConfig:
    name: ClassVar[str]

    def check(self, method: MethodConfig, finetune: TrainRecipe, steps_per_epoch: int) -> None:
        """Raise ConfigError if this schedule cannot run with this method and fine-tune."""
        if self.name != "oneshot" and not method.gradual:
            raise ConfigError(
                f"schedule '{self.name}' applies a method in steps; method '{method.name}' "
                "is applied once: use schedule=oneshot"
            )


@dataclass(frozen=True)
class OneShot(ScheduleConfig):
    name = "oneshot"


@dataclass(frozen=True)
class Iterative(ScheduleConfig):
    name = "iterative"
    rounds: int = 4

    def check(self, method: MethodConfig, finetune: TrainRecipe, steps_per_epoch: int) -> None:
        super().check(method, finetune, steps_per_epoch)
        require(self.rounds >= 1, f"schedule.rounds must be >= 1, got {self.rounds}")
        require(
            finetune.epochs >= self.rounds,
            f"schedule.rounds={self.rounds} do not fit schedule.finetune.epochs="
            f"{finetune.epochs}: each round needs at least one epoch of retraining",
        )


@dataclass(frozen=True)
class GradualPruning(ScheduleConfig):
    name = "agp"
    begin: int = 0
    end: int = 5
    frequency: int = 50
    initial: float = 0.0

    def check(self, method: MethodConfig, finetune: TrainRecipe, steps_per_epoch: int) -> None:
        super().check(method, finetune, steps_per_epoch)
        require(0 <= self.initial < 1, f"schedule.initial must be in [0, 1), got {self.initial}")
        require(self.frequency >= 1, f"schedule.frequency must be >= 1, got {self.frequency}")
        require(
            0 <= self.begin < self.end <= finetune.epochs,
            f"schedule.begin={self.begin} and schedule.end={self.end} must satisfy "
            f"0 <= begin < end <= schedule.finetune.epochs={finetune.epochs}",
        )
        ramp = (self.end - self.begin) * steps_per_epoch
        require(
            ramp >= self.frequency,
            f"schedule.frequency={self.frequency} steps exceeds the ramp of {ramp} steps "
            f"(epochs {self.begin} to {self.end} at {steps_per_epoch} steps each)",
        )

    def progress(self, step: int, steps_per_epoch: int) -> float | None:
        """Share of the target due at optimizer step `step`, or None when no update is due."""
        start, stop = self.begin * steps_per_epoch, self.end * steps_per_epoch
        if step < start or step > stop or ((step - start) % self.frequency and step != stop):
            return None
        done = (step - start) / (stop - start)
        return 1 + (self.initial - 1) * (1 - done) ** 3


@dataclass(frozen=True)
class LotteryTicket(ScheduleConfig):
    name = "lottery"
    rounds: int = 3
    rewind_epoch: int = 0
    reinit: bool = False

    def check(self, method: MethodConfig, finetune: TrainRecipe, steps_per_epoch: int) -> None:
        super().check(method, finetune, steps_per_epoch)
        require(self.rounds >= 1, f"schedule.rounds must be >= 1, got {self.rounds}")
        require(self.rewind_epoch >= 0, "schedule.rewind_epoch must be >= 0")
        require(finetune.epochs >= 1, "schedule 'lottery' needs schedule.finetune.epochs >= 1")
        if not method.sparsifies:
            raise ConfigError(
                f"schedule 'lottery' rewinds weights onto pruning masks; method '{method.name}' "
                "makes no masks: use method=prune or prune_nm"
            )


SCHEDULES: dict[str, type[ScheduleConfig]] = {
    cls.name: cls for cls in (OneShot, Iterative, GradualPruning, LotteryTicket)
}


def parse_schedule(section: Mapping[str, Any]) -> ScheduleConfig:
    """The schedule's own options (everything in `schedule` but the recipes)."""
    values = {k: v for k, v in section.items() if k not in RECIPES}
    name = values.pop("name", None)
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{name}'; choose one of: {', '.join(SCHEDULES)}")
    return from_mapping(SCHEDULES[name], values, "schedule")


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


def run_schedule(
    schedule: ScheduleConfig,
    stage: Stage,
    model: nn.Module,
    data: DataBundle,
    recipe: TrainRecipe,
    runtime: RuntimeConfig,
    *,
    seed: int,
    progress: Progress | None = None,
    rewind: Callable[[], Mapping[str, Any]] | None = None,
    objective: Objective | None = None,
) -> Finetune:
    """Compress `model` through `stage` on `schedule`, fine-tuning with `recipe` (and
    `objective` as the loss instead of cross-entropy, e.g. distillation)."""
    result = Finetune()
    steps_per_epoch = math.ceil(len(data.train) / recipe.batch_size)
    step = 0

    def update(fraction: float) -> bool:
        replaced = stage.update(fraction)
        if "sparsity" in (summary := stage.summary()):
            result.sparsity.append((step, summary["sparsity"]))
        return replaced

    def train(epochs: int, label: str, after_step: Callable[[], bool | None]) -> None:
        if epochs <= 0:
            return
        offset = len(result.history)
        stats = fit(
            stage.training_module(model),
            data,
            dataclasses.replace(recipe, epochs=epochs),
            runtime,
            seed=seed + offset,
            label=label,
            after_step=after_step,
            progress=progress,
            objective=objective,
        )
        result.history += [dataclasses.replace(s, epoch=s.epoch + offset) for s in stats]

    def count_step() -> None:
        nonlocal step
        step += 1
        stage.after_step()

    if isinstance(schedule, Iterative):
        rounds = schedule.rounds
        for r in range(1, rounds + 1):
            update(r / rounds)
            epochs = recipe.epochs // rounds + (recipe.epochs % rounds if r == rounds else 0)
            train(epochs, f"round {r}/{rounds}", count_step)
    elif isinstance(schedule, GradualPruning):
        update(schedule.initial)

        def gradual_step() -> bool:
            count_step()
            due = schedule.progress(step, steps_per_epoch)
            return update(due) if due is not None else False

        train(recipe.epochs, "agp", gradual_step)
        update(1.0)  # the target, whatever the ramp's last update reached
    elif isinstance(schedule, LotteryTicket):
        if rewind is None:
            raise ValueError("the lottery schedule needs the weights to rewind to")
        for r in range(1, schedule.rounds + 1):
            update(r / schedule.rounds)
            model.load_state_dict(rewind())
            stage.after_step()  # the masks again, over the rewound weights
            train(recipe.epochs, f"ticket {r}/{schedule.rounds}", count_step)
    else:
        update(1.0)
        train(recipe.epochs, "finetune", count_step)
    return result
