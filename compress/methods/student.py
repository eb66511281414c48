"""`method=student`: a smaller model, trained from scratch in place of the baseline.

The compressed model is a new architecture (`method.model`, any model config), trained
for `schedule.finetune.epochs` with the fine-tune recipe. With `distill=none` that is the
student alone (the control); with a `distill` option the baseline teaches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.config import require
from compress.methods.base import MethodConfig, MethodContext, Stage, StageBase
from compress.models import build_model
from compress.models.eval_mode import model_device


@dataclass(frozen=True)
class Student(MethodConfig):
    name = "student"
    gradual = False
    model: dict[str, Any] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            bool(self.model) and "name" in (self.model or {}),
            "method.model must be the student's model config, e.g. {name: mlp, hidden: [800]}",
        )

    def check(self, finetune_epochs: int) -> None:
        require(
            finetune_epochs >= 1,
            "method 'student' trains the student in the fine-tune: schedule.finetune.epochs "
            f"must be >= 1, got {finetune_epochs}",
        )

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return train_student(model, self, context)


class StudentStage(StageBase):
    def __init__(self, teacher: nn.Module, config: Student, context: MethodContext) -> None:
        self.config = config
        self.context = context
        self.device = model_device(teacher)
        self.num_classes = context.data.num_classes if context.data is not None else 10
        self.student: nn.Module | None = None

    def update(self, progress: float) -> bool:
        if progress < 1 or self.student is not None:
            return False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            student = build_model(
                dict(self.config.model or {}), self.context.input_shape, self.num_classes
            )
        self.student = student.to(self.device)
        return True

    def training_module(self, model: nn.Module) -> nn.Module:
        return self.student if self.student is not None else model

    def finalize(self, model: nn.Module) -> nn.Module:
        self.update(1.0)
        assert self.student is not None
        return self.student

    def model_config(self) -> dict[str, Any] | None:
        return dict(self.config.model or {})


def train_student(model: nn.Module, config: Student, context: MethodContext) -> StudentStage:
    return StudentStage(model, config, context)
