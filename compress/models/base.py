"""The model plugin: a config dataclass per model that validates its options and builds it.

A model is one module in this package defining a `ModelConfig` subclass with a `name`;
the registry finds it by that name (`model: {name: mlp, hidden: [64]}`), or a config
section points at a subclass anywhere with `_target_` (`model: {_target_: pkg.MyNet}`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from compress.errors import ConfigError
from compress.plugins import TARGET, Plugin, Registry


@dataclass(frozen=True)
class ModelConfig(Plugin):
    """Base of every model config; its fields are the model's options."""

    registry: ClassVar[Registry[ModelConfig]] = Registry("model", "compress.models")

    @classmethod
    def label(cls) -> str:
        """The name users see in messages: the registered name, else the class name."""
        return getattr(cls, "name", cls.__qualname__)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """A freshly initialised model (torch's global RNG) for inputs of `input_shape`."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define build()")


def model_names() -> tuple[str, ...]:
    """Every registered model name, in the registry's order."""
    return ModelConfig.registry.names()


def parse_model(section: Mapping[str, Any]) -> ModelConfig:
    """The validated config of the model `section` names, or a one-line ConfigError."""
    registry = ModelConfig.registry
    if TARGET in section:
        cls = registry.target(section[TARGET], "model")
    elif section.get("name") is None:
        choices = ", ".join(registry.names())
        raise ConfigError(f"model config has no 'name' (or {TARGET}); choose one of: {choices}")
    else:
        cls = registry.get(section["name"])
    valid = [field.name for field in dataclasses.fields(cls) if field.init]
    for option in section:
        if option not in (*valid, "name", TARGET):
            choices = ", ".join(valid) if valid else "none"
            raise ConfigError(
                f"model {cls.label()!r} has no option {option!r}; valid options: {choices}"
            )
    return registry.parse(section, "model")
