"""Any torchvision classification model by name, randomly initialised.

torchvision is imported only when such a config is made: it adds seconds to start-up, and
most runs use the small built-in models.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from compress.errors import ConfigError
from compress.models.base import ModelConfig

_LIST_HINT = "python -c 'import torchvision.models as m; print(m.list_models(module=m))'"


@dataclass(frozen=True)
class TorchvisionConfig(ModelConfig):
    """torchvision `get_model(arch, weights=None, num_classes=...)`.

    Pretrained weights are refused: there is no download here, and a checkpoint's classifier
    would not match `num_classes` anyway.
    """

    name: ClassVar[str] = "torchvision"

    arch: str = "resnet18"
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.weights is not None:
            raise ConfigError(
                f"model 'torchvision': weights={self.weights!r} is not supported; pretrained "
                "weights cannot be downloaded here, set weights: null"
            )
        import torchvision.models  # lazy on purpose, see module docstring

        names = torchvision.models.list_models(module=torchvision.models)
        if not isinstance(self.arch, str) or self.arch not in names:
            close = difflib.get_close_matches(str(self.arch), names, n=5, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}; " if close else ""
            raise ConfigError(
                f"unknown torchvision arch {self.arch!r}; {hint}list all with: {_LIST_HINT}"
            )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        import torchvision.models

        return torchvision.models.get_model(self.arch, weights=None, num_classes=num_classes)
