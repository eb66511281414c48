"""`schedule=oneshot`: compress fully, then fine-tune."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.methods import Stage
from compress.schedules.base import Finetune, ScheduleConfig, ScheduleContext, Tuning


@dataclass(frozen=True)
class OneShot(ScheduleConfig):
    name = "oneshot"

    def run(self, stage: Stage, model: nn.Module, context: ScheduleContext) -> Finetune:
        tuning = Tuning(stage, model, context)
        tuning.update(1.0)
        tuning.train(context.recipe.epochs, "finetune")
        return tuning.result
