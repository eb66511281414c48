"""`method=none`: the baseline alone, measured like any compressed model."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compress.methods.base import MethodConfig, MethodContext, StageBase, register_method


@dataclass(frozen=True)
class NoCompression(MethodConfig):
    name = "none"
    finetunes = False


class _Identity(StageBase):
    def update(self, progress: float) -> bool:
        return False

    def finalize(self, model: nn.Module) -> nn.Module:
        return model


@register_method(NoCompression)
def keep_baseline(model: nn.Module, config: NoCompression, context: MethodContext) -> _Identity:
    return _Identity()
