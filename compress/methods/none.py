"""`method=none`: the baseline alone, measured like any compressed model."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.methods.base import MethodConfig, MethodContext, Stage, StageBase


@dataclass(frozen=True)
class NoCompression(MethodConfig):
    name = "none"
    finetunes = False

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return keep_baseline(model, self, context)


class _Identity(StageBase):
    def update(self, progress: float) -> bool:
        return False

    def finalize(self, model: nn.Module) -> nn.Module:
        return model


def keep_baseline(model: nn.Module, config: NoCompression, context: MethodContext) -> _Identity:
    return _Identity()
