"""`schedule=agp`: Zhu & Gupta's automated gradual pruning.

The target ramps as s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, updated every
`frequency` optimizer steps between epochs `begin` and `end`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.config import require
from compress.methods import MethodConfig, Stage
from compress.schedules.base import Finetune, ScheduleConfig, ScheduleContext, Tuning
from compress.train.recipe import TrainRecipe


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

    def run(self, stage: Stage, model: nn.Module, context: ScheduleContext) -> Finetune:
        tuning = Tuning(stage, model, context)
        tuning.update(self.initial)

        def gradual_step() -> bool:
            tuning.count_step()
            due = self.progress(tuning.step, tuning.steps_per_epoch)
            return tuning.update(due) if due is not None else False

        tuning.train(context.recipe.epochs, "agp", gradual_step)
        tuning.update(1.0)  # the target, whatever the ramp's last update reached
        return tuning.result
