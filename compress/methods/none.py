"""`method=none`: the baseline alone, measured like any compressed model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compress.methods.base import MethodConfig, MethodContext, register_method


@dataclass(frozen=True)
class NoCompression(MethodConfig):
    name = "none"
    finetunes = False


class _Identity:
    def update(self, progress: float) -> bool:
        return False

    def after_step(self) -> None:
        pass

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def summary(self) -> dict[str, float]:
        return {}

    def artifacts(self, folder: Path) -> list[Path]:
        return []


@register_method(NoCompression)
def keep_baseline(model: nn.Module, config: NoCompression, context: MethodContext) -> _Identity:
    return _Identity()
