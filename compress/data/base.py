"""The dataset plugin: a config dataclass per dataset that validates itself and loads it.

A dataset is one module in this package defining a `DatasetConfig` subclass with a `name`
(`dataset: {name: digits}`), or a subclass anywhere named by `_target_`. The base holds the
keys every dataset shares: where files live and how the official train part is carved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from compress.config import require
from compress.data.bundle import RawData
from compress.data.normalize import AUTO, NormalizeValue, check_normalize
from compress.errors import ConfigError
from compress.plugins import TARGET, Plugin, Registry


@dataclass(frozen=True)
class DatasetConfig(Plugin):
    """The keys of every dataset; subclasses add their own and say how to load the samples."""

    registry: ClassVar[Registry[DatasetConfig]] = Registry("dataset", "compress.data")
    #: A dataset whose `_target_` names something else than its config class (`custom`: the
    #: user's factory) takes it into this field; None: `_target_` names a DatasetConfig.
    target_key: ClassVar[str | None] = None

    root: str | Path | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None
    normalize: NormalizeValue = AUTO
    #: `auto`: in memory when all splits fit in `memory_limit_gb` as float32 on the device,
    #: else streamed through a DataLoader; true / false force one or the other.
    in_memory: bool | str = "auto"
    memory_limit_gb: float = 4.0
    #: DataLoader worker processes of the streamed path (0: read in the main process).
    workers: int = 2

    def __post_init__(self) -> None:
        check_normalize(self.normalize)
        require(
            self.in_memory in (True, False, "auto"),
            f"dataset.in_memory must be auto, true or false; got {self.in_memory!r}",
        )
        require(
            math.isfinite(self.memory_limit_gb) and self.memory_limit_gb > 0,
            f"dataset.memory_limit_gb must be > 0; got {self.memory_limit_gb!r}",
        )
        require(
            isinstance(self.workers, int) and self.workers >= 0,
            f"dataset.workers must be an integer >= 0; got {self.workers!r}",
        )
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        require(
            math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1,
            f"dataset.val_fraction must be a fraction in [0, 1); got {self.val_fraction!r}",
        )
        require(self.split_seed >= 0, f"dataset.split_seed must be >= 0; got {self.split_seed!r}")
        require(
            self.train_subset is None or self.train_subset >= 1,
            f"dataset.train_subset must be >= 1 or null; got {self.train_subset!r}",
        )

    @classmethod
    def label(cls) -> str:
        """The name users see (and the fingerprint hashes): registered name, else class name."""
        return getattr(cls, "name", cls.__qualname__)

    def load_raw(self, generator: torch.Generator) -> RawData:
        """The official train and test samples; `generator` drives any random choice."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define load_raw()")

    def should_stream(self, count: int, image_shape: tuple[int, ...]) -> bool:
        """Whether `count` images of `image_shape` are streamed (see `in_memory`)."""
        if self.in_memory != "auto":
            return not self.in_memory
        return count * math.prod(image_shape) * 4 > self.memory_limit_gb * 1024**3


def dataset_names() -> tuple[str, ...]:
    """Every registered dataset name, in the registry's order."""
    return DatasetConfig.registry.names()


def parse_dataset(section: Mapping[str, Any]) -> DatasetConfig:
    """The validated config of the dataset `section` names, or a one-line ConfigError.

    A null value means "unset": the default applies. `_target_` names a DatasetConfig
    subclass, except for a dataset with a `target_key` (`custom`), which takes it as a value.
    """
    values = {key: value for key, value in section.items() if value is not None}
    registry = DatasetConfig.registry
    named = registry.get(values["name"]) if values.get("name") in registry.names() else None
    if named is not None and named.target_key is not None and TARGET in values:
        values[named.target_key] = values.pop(TARGET)  # `dataset=custom dataset._target_=...`
    if TARGET in values:
        cls = registry.target(values[TARGET], "dataset")
    else:
        cls = registry.get(values.get("name"))
    _check_keys(cls, values)
    return registry.parse(values, "dataset")


def _keys(cls: type[DatasetConfig]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls) if field.init)


def _check_keys(cls: type[DatasetConfig], values: Mapping[str, Any]) -> None:
    """Unknown keys, told apart from keys of another dataset (a likely copy-paste slip)."""
    valid = _keys(cls)
    stray = sorted(key for key in values if key not in (*valid, "name", TARGET))
    owners = {
        key: [name for name in dataset_names() if key in _keys(DatasetConfig.registry.get(name))]
        for key in stray
    }
    unknown = [key for key in stray if not owners[key]]
    if unknown:
        raise ConfigError(
            f"unknown dataset key(s): {', '.join(unknown)} "
            f"(valid keys for dataset '{cls.label()}': {', '.join(('name', *valid))})"
        )
    if stray:
        belong = sorted({name for key in stray for name in owners[key]})
        raise ConfigError(
            f"dataset key(s) {', '.join(stray)} do not apply to dataset '{cls.label()}' "
            f"(they belong to {', '.join(belong)})"
        )
