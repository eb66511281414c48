"""`schedule=iterative`: k rounds of (compress to i/k of the target, retrain) (Han et al. 2015)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.config import require
from compress.methods import MethodConfig, Stage
from compress.schedules.base import Finetune, ScheduleConfig, ScheduleContext, Tuning
from compress.train.recipe import TrainRecipe


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

    def run(self, stage: Stage, model: nn.Module, context: ScheduleContext) -> Finetune:
        tuning, epochs, rounds = Tuning(stage, model, context), context.recipe.epochs, self.rounds
        for r in range(1, rounds + 1):
            tuning.update(r / rounds)
            tuning.train(
                epochs // rounds + (epochs % rounds if r == rounds else 0), f"round {r}/{rounds}"
            )
        return tuning.result
