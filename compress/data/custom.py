"""`dataset=custom dataset._target_=pkg.module.factory`: a function of the user's own that
returns their splits as `torch.utils.data.Dataset`s, stacked into tensors like any other.

The factory is called with `dataset.args` as keyword arguments and returns either a pair
`(train, test)` or a mapping `{train: ..., test: ..., val: ...}` (val optional: without it val
is carved from train by `val_fraction`). Items are `(image, label)`: a uint8 (C, H, W) tensor
(0..255) or a float one (already in [0, 1]), and an int. Class names come from
`dataset.class_names`, else the train Dataset's `classes`, else "0", "1", ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch.utils.data import Dataset

from compress.config import require
from compress.data.stacking import Datasets, DatasetsConfig
from compress.errors import ConfigError
from compress.plugins import TARGET

KEYS = ("train", "test", "val")


@dataclass(frozen=True)
class CustomConfig(DatasetsConfig):
    """Splits from a factory named by `_target_` (held as `factory`), called with `args`."""

    name: ClassVar[str] = "custom"
    target_key: ClassVar[str | None] = "factory"

    factory: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.factory is not None,
            f"dataset 'custom' needs dataset.{TARGET}=pkg.module.factory (a function returning "
            "(train, test) or {train, test, val} torch Datasets)",
        )

    def datasets(self) -> Datasets:
        factory = _import(str(self.factory))
        try:
            returned = factory(**self.args)
        except Exception as error:
            raise ConfigError(
                f"dataset 'custom': {self.factory}() raised {type(error).__name__}: "
                f"{' '.join(str(error).split())}"
            ) from error
        splits = _splits(returned, str(self.factory))
        names = tuple(self.class_names) if self.class_names else _classes(splits["train"])
        return Datasets(splits["train"], splits["test"], splits.get("val"), names)


def _import(path: str) -> Callable[..., Any]:
    module, _, attr = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"dataset.{TARGET}: cannot import '{path}' ({error})") from error
    if not callable(factory):
        raise ConfigError(f"dataset.{TARGET}: '{path}' is not callable")
    return factory


def _splits(returned: Any, path: str) -> dict[str, Dataset]:
    """The factory's result as {train, test[, val]}, each a torch Dataset."""
    if isinstance(returned, tuple | list) and len(returned) == 2:
        splits = dict(zip(("train", "test"), returned, strict=True))
    elif isinstance(returned, Mapping) and {"train", "test"} <= set(returned) <= set(KEYS):
        splits = dict(returned)
    else:
        raise ConfigError(
            f"dataset 'custom': {path}() must return (train, test) or a mapping with keys "
            f"train, test and optionally val; got {_kind(returned)}"
        )
    for key, value in splits.items():
        if not isinstance(value, Dataset):
            raise ConfigError(
                f"dataset 'custom': {path}() returned {_kind(value)} as {key}, "
                "not a torch.utils.data.Dataset"
            )
    return splits


def _classes(train: Dataset) -> tuple[str, ...] | None:
    classes = getattr(train, "classes", None)
    if isinstance(classes, list | tuple) and all(isinstance(c, str) for c in classes):
        return tuple(classes)
    return None


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a mapping with keys {', '.join(map(str, value))}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
