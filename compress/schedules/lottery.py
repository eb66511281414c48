"""`schedule=lottery`: iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

Before each retraining the surviving weights go back to their initial values, or to those
of epoch k of the baseline's training ("late rewinding", `rewind_epoch: k`, retrained
deterministically); `reinit: true` is the control that re-initialises them randomly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from compress.config import require
from compress.errors import ConfigError
from compress.methods import MethodConfig, Stage
from compress.schedules.base import Finetune, ScheduleConfig, ScheduleContext, Tuning
from compress.train.callbacks import observing
from compress.train.loop import fit
from compress.train.recipe import TrainRecipe


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

    def run(self, stage: Stage, model: nn.Module, context: ScheduleContext) -> Finetune:
        tuning, rewound = Tuning(stage, model, context), None
        for r in range(1, self.rounds + 1):
            tuning.update(r / self.rounds)
            if rewound is None or self.reinit:
                rewound = self.rewind_state(context)
            model.load_state_dict(rewound)
            stage.after_step()  # the masks again, over the rewound weights
            tuning.train(context.recipe.epochs, f"ticket {r}/{self.rounds}")
        return tuning.result

    def rewind_state(self, context: ScheduleContext) -> Mapping[str, torch.Tensor]:
        """The weights a ticket restarts from (computed once; drawn anew each round for
        the `reinit` control, from the RNG's current state)."""
        if context.new_model is None or context.initial_state is None:
            raise ValueError("the lottery schedule needs the initial weights and the model")
        model = context.new_model()
        if self.reinit:
            return model.state_dict()
        model.load_state_dict(context.initial_state)
        model = model.to(context.data.train.device)
        if self.rewind_epoch > 0:
            if context.baseline_recipe is None:
                raise ValueError("late rewinding needs the baseline's training recipe")
            with observing(phase="rewind"):
                fit(
                    model,
                    context.data,
                    context.baseline_recipe,
                    context.runtime,
                    seed=context.baseline_seed,
                    label="rewind",
                    stop_after=self.rewind_epoch,
                )
        return model.state_dict()
