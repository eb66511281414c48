"""Typed, self-validating views of the plain config sections the pipeline reads.

Hydra composes YAML; these dataclasses turn each section into a value that is
known to be usable, so bad input fails in one line before any training starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from compress.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass `cls` from `values`; unknown keys and wrong types are ConfigErrors."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not matches(value, hints[name]):
            raise ConfigError(f"{where}.{name} must be {describe(hints[name])}, got {value!r}")
    return cls(**values)


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value fits a field annotation (bool is not a number here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (hint is float or isinstance(value, int))
        )
    if origin in (tuple, list):
        return isinstance(value, list | tuple) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping) and all(
            matches(k, args[0]) and matches(v, args[1]) for k, v in value.items()
        )
    return hint is Any or not isinstance(hint, type) or isinstance(value, hint)


def describe(hint: Any) -> str:
    """`int | None` -> 'an int or null', for error messages."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (tuple, list):
        return f"a list of {describe(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    if typing.get_origin(hint) is dict:
        key, value = (describe(a).split(" ", 1)[-1] for a in typing.get_args(hint))
        return f"a mapping of {key} to {value}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def require_finite(values: Any, where: str = "") -> None:
    """Refuse a NaN or infinite number anywhere in `values` (mappings and lists, walked),
    naming its key: no setting means anything at `inf` or `nan`, and one that slips through
    (a learning rate of inf) only fails later, as a diverged loss."""
    if isinstance(values, float) and not math.isfinite(values):
        raise ConfigError(f"{where or 'the config'} must be a finite number, got {values}")
    if isinstance(values, Mapping):
        for key, value in values.items():
            require_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(values, list | tuple):
        for index, value in enumerate(values):
            require_finite(value, f"{where}[{index}]")


def require(condition: bool, message: str) -> None:
    """Raise a one-line ConfigError unless `condition` holds."""
    if not condition:
        raise ConfigError(message)
