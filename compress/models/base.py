"""The model plugin: a config dataclass per model that validates its options and builds it.

A model is one module in this package defining a `ModelConfig` subclass with a `name`;
the registry finds it by that name (`model: {name: mlp, hidden: [64]}`), or a config
section points at a subclass anywhere with `_target_` (`model: {_target_: pkg.MyNet}`).
A `_target_` naming an `nn.Module` class (or a function returning one) is the user's own
model, built by the `custom` plugin (compress/models/custom.py).

Every model takes the same three keyword options for weights made elsewhere: `weights` (a
file, or a name its plugin knows, like torchvision's `DEFAULT`), `weights_prefix` (a key
prefix to strip) and `reset_head` (replace the classifier when its classes differ).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from compress.data.preprocess import Preprocessing
from compress.errors import ConfigError
from compress.plugins import TARGET, Plugin, Registry, import_target

#: The options every model takes, beside its own.
WEIGHT_OPTIONS = ("weights", "weights_prefix", "reset_head")


@dataclass(frozen=True)
class ModelConfig(Plugin):
    """Base of every model config; its fields are the model's options."""

    registry: ClassVar[Registry[ModelConfig]] = Registry("model", "compress.models")

    weights: str | None = field(default=None, kw_only=True)
    weights_prefix: str | None = field(default=None, kw_only=True)
    reset_head: bool = field(default=False, kw_only=True)

    @classmethod
    def label(cls) -> str:
        """The name users see in messages: the registered name, else the class name."""
        return getattr(cls, "name", cls.__qualname__)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """A freshly initialised model (torch's global RNG) for inputs of `input_shape`."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define build()")

    def pretrained_state(self) -> dict[str, torch.Tensor] | None:
        """The state dict `weights` names (None without weights); plugins that know named
        weights (torchvision's enums) override this and fall back to a file."""
        if self.weights is None:
            return None
        from compress.models.weight_files import read_state

        return read_state(self.weights, self.weights_prefix)

    def weights_identity(self) -> str | None:
        """What identifies the weights in cache keys: a hash of the file's bytes."""
        if self.weights is None:
            return None
        from compress.models.weight_files import file_digest

        return file_digest(self.weights)

    def preprocessing(self) -> Preprocessing | None:
        """The inputs these weights expect, where they say (None: the dataset's own)."""
        return None


def model_names() -> tuple[str, ...]:
    """Every registered model name, in the registry's order."""
    return ModelConfig.registry.names()


def parse_model(section: Mapping[str, Any]) -> ModelConfig:
    """The validated config of the model `section` names, or a one-line ConfigError."""
    registry = ModelConfig.registry
    target = section.get(TARGET)
    if target is not None:
        found = import_target(target, "model")
        if not (isinstance(found, type) and issubclass(found, ModelConfig)):
            return registry.get("custom").from_target(found, section)  # type: ignore[attr-defined]
        cls = registry.target(target, "model")
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
    return registry.parse({k: v for k, v in section.items() if k != TARGET or v}, "model")
