"""The user's own model: `model=custom model._target_=pkg.module.Class`.

The target is an `nn.Module` subclass or a function returning a module, importable from
the working directory or PYTHONPATH. The section's other keys are its arguments (beside
the weight options every model takes); it also gets `num_classes` and `input_shape` when
its signature names them. The artifact keeps the section, so a saved model rebuilds from
the same target wherever that is importable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from compress.config import from_mapping
from compress.errors import ConfigError
from compress.models.base import WEIGHT_OPTIONS, ModelConfig
from compress.plugins import TARGET, import_target, plain

#: What the lab passes by itself when the target's signature names it.
_GIVEN = ("num_classes", "input_shape")


@dataclass(frozen=True)
class CustomModel(ModelConfig):
    """A model class (or factory) of the user's, named by its import path."""

    name: ClassVar[str] = "custom"

    target: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target is None:
            raise ConfigError(
                f"model 'custom' needs its class: model.{TARGET}=pkg.module.Class "
                "(importable from the working directory or PYTHONPATH)"
            )
        _check_arguments(self._factory(), self.target, self.options)

    @classmethod
    def from_target(cls, found: Any, section: Mapping[str, Any]) -> CustomModel:
        """The config of `section`, whose `_target_` imported as `found` (not a ModelConfig)."""
        values = {key: plain(value) for key, value in section.items()}
        target = str(values.pop(TARGET))
        values.pop("name", None)
        _check_factory(found, target)
        weights = {key: values.pop(key) for key in WEIGHT_OPTIONS if key in values}
        return from_mapping(cls, {"target": target, "options": values, **weights}, "model")

    def _factory(self) -> Callable[..., Any]:
        found = import_target(self.target, "model")
        _check_factory(found, str(self.target))
        return found

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        factory = self._factory()
        given = {"num_classes": num_classes, "input_shape": tuple(input_shape)}
        named = _parameters(factory)
        arguments = {k: v for k, v in given.items() if k in named and k not in self.options}
        try:
            model = factory(**self.options, **arguments)
        except Exception as error:
            detail = str(error).splitlines()[0] if str(error) else ""
            raise ConfigError(
                f"model '{self.target}': its constructor failed: {type(error).__name__}: {detail}"
            ) from error
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model '{self.target}' returned {type(model).__name__}, not a torch nn.Module"
            )
        return model


def _check_factory(found: Any, target: str) -> None:
    if isinstance(found, type) and not issubclass(found, nn.Module):
        raise ConfigError(
            f"model.{TARGET}: '{target}' is not a torch nn.Module (nor a model config)"
        )
    if not callable(found):
        raise ConfigError(
            f"model.{TARGET}: '{target}' is a {type(found).__name__}, "
            "not an nn.Module class or a function returning one"
        )


def _parameters(factory: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: pass nothing extra
        return set()


def _check_arguments(factory: Callable[..., Any], target: str, options: Mapping[str, Any]) -> None:
    """The constructor's signature accepts the options (before anything is built)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    named = set(signature.parameters)
    given = {key: None for key in _GIVEN if key in named and key not in options}
    try:
        signature.bind(**options, **given)
    except TypeError as error:
        accepted = ", ".join(p for p in signature.parameters if p not in ("self",)) or "none"
        raise ConfigError(
            f"model '{target}' does not take these arguments ({error}); its parameters: {accepted}"
        ) from error
