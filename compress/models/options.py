"""Checks shared by model configs: one-line errors that name the model and the option."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from compress.errors import ConfigError


def positive_int(model: str, option: str, value: Any) -> int:
    """A positive int, or a ConfigError that says which option is wrong."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model {model!r}: {option} must be a positive integer, got {value!r}")
    return value


def positive_ints(model: str, option: str, values: Any, *, allow_empty: bool) -> tuple[int, ...]:
    """A list option (a Hydra ListConfig is fine) as a tuple of positive ints."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigError(f"model {model!r}: {option} must be a list of integers, got {values!r}")
    ints = tuple(positive_int(model, option, v) for v in values)
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
