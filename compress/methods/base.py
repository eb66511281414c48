"""Method registry: a method is a typed config class plus one handler registered for it.

Adding a method means writing one config dataclass and one handler; `apply_method`
dispatches on the config's type, so nothing else is edited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from torch import nn

from compress.config import from_mapping
from compress.errors import ConfigError


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config; subclasses validate themselves in __post_init__."""

    name: ClassVar[str]
    #: Whether the method needs a fine-tune phase after it is applied.
    finetunes: ClassVar[bool] = True


class Stage(Protocol):
    """What a handler returns: hooks for fine-tuning and the step that makes it real."""

    def after_step(self) -> None:
        """Called after every optimizer step of the fine-tune (e.g. re-apply masks)."""

    def finalize(self, model: nn.Module) -> nn.Module:
        """Turn the simulation into the real compressed model (masks permanent, ...)."""

    def summary(self) -> dict[str, float]:
        """Metrics that describe what the stage did (e.g. sparsity reached)."""


C = TypeVar("C", bound=MethodConfig)
Handler = Callable[[nn.Module, Any], Stage]

_CONFIGS: dict[str, type[MethodConfig]] = {}
_HANDLERS: dict[type[MethodConfig], Handler] = {}


def register_method(config_cls: type[C]) -> Callable[[Callable[[nn.Module, C], Stage]], Handler]:
    """Register `config_cls` under its `name` and the decorated function as its handler."""

    def decorate(handler: Callable[[nn.Module, C], Stage]) -> Handler:
        _CONFIGS[config_cls.name] = config_cls
        _HANDLERS[config_cls] = handler
        return handler

    return decorate


def method_names() -> tuple[str, ...]:
    return tuple(sorted(_CONFIGS))


def parse_method(values: Mapping[str, Any]) -> MethodConfig:
    """Turn the `method` config section into its typed config (validated)."""
    values = dict(values)
    name = values.pop("name", None)
    if name not in _CONFIGS:
        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(method_names())}")
    return from_mapping(_CONFIGS[name], values, "method")


def apply_method(model: nn.Module, config: MethodConfig) -> Stage:
    """Apply the method described by `config` to `model` in place; return its stage hooks."""
    return _HANDLERS[type(config)](model, config)
