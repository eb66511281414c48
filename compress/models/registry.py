"""Name -> builder registry, so adding a model is one decorated function and nothing else."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from compress.errors import ConfigError

Builder = Callable[..., nn.Module]

# Insertion order is the order users see in error messages and in MODEL_NAMES.
REGISTRY: dict[str, Builder] = {}

# Every builder takes these two positionally; everything after them is a user option.
_FIXED_PARAMS = 2


def register(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(input_shape, num_classes, **options)`` under ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        REGISTRY[name] = builder
        return builder

    return decorate


def option_names(builder: Builder) -> tuple[str, ...]:
    """Options a builder accepts, read from its signature (not from a TypeError after the fact)."""
    params = list(inspect.signature(builder).parameters.values())[_FIXED_PARAMS:]
    return tuple(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD)


def check_options(name: str, builder: Builder, options: Iterable[str]) -> None:
    """Reject options the builder does not take, naming the valid ones."""
    valid = option_names(builder)
    for option in options:
        if option not in valid:
            choices = ", ".join(valid) if valid else "none"
            raise ConfigError(f"model {name!r} has no option {option!r}; valid options: {choices}")


def positive_int(model: str, option: str, value: Any) -> int:
    """Coerce a config value to a positive int or explain which option is wrong."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model {model!r}: {option} must be a positive integer, got {value!r}")
    return value


def positive_ints(model: str, option: str, values: Any, *, allow_empty: bool) -> list[int]:
    """Coerce a list option (a Hydra ListConfig is fine) to a list of positive ints."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigError(f"model {model!r}: {option} must be a list of integers, got {values!r}")
    ints = [positive_int(model, option, v) for v in values]
    if not ints and not allow_empty:
        raise ConfigError(f"model {model!r}: {option} must not be empty")
    return ints


def image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Unpack (channels, height, width) for conv models, which cannot take a flat input."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {model!r} needs an image input shape (channels, height, width), "
            f"got {tuple(input_shape)}"
        )
    channels, height, width = input_shape
    return channels, height, width
