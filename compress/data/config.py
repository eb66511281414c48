"""Validate the dataset config once, so every loader can trust its values."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.config import from_mapping, require
from compress.errors import ConfigError

DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "fake",
)

_COMMON_KEYS = ("name", "root", "download", "val_fraction", "split_seed", "train_subset")
# Keys that only mean something for one dataset; setting them elsewhere is a likely mistake.
_ONLY_FOR = {
    "test_fraction": "digits",
    "num_train": "fake",
    "num_test": "fake",
    "shape": "fake",
    "num_classes": "fake",
    "noise": "fake",
}


@dataclass(frozen=True)
class DataConfig:
    """The dataset config with defaults filled in and every value checked."""

    name: str
    root: str | Path | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None
    test_fraction: float = 0.2
    num_train: int = 512
    num_test: int = 256
    shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10
    noise: float = 0.5

    def __post_init__(self) -> None:
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        object.__setattr__(self, "shape", tuple(self.shape))
        for key, low, high in (("val_fraction", 0, 1), ("test_fraction", 1e-12, 1)):
            value = getattr(self, key)
            interval = "[0, 1)" if low == 0 else "(0, 1)"
            require(
                math.isfinite(value) and low <= value < high,
                f"dataset.{key} must be a fraction in {interval}; got {value!r}",
            )
        for key, minimum in (("split_seed", 0), ("num_train", 1), ("num_test", 1)):
            value = getattr(self, key)
            require(value >= minimum, f"dataset.{key} must be >= {minimum}; got {value!r}")
        require(
            self.train_subset is None or self.train_subset >= 1,
            f"dataset.train_subset must be >= 1 or null; got {self.train_subset!r}",
        )
        require(
            self.num_classes >= 2, f"dataset.num_classes must be >= 2; got {self.num_classes!r}"
        )
        require(
            math.isfinite(self.noise) and self.noise >= 0,
            f"dataset.noise must be >= 0; got {self.noise!r}",
        )
        require(
            len(self.shape) == 3 and all(d >= 1 for d in self.shape),
            "dataset.shape must be three positive integers [channels, height, width]; "
            f"got {list(self.shape)!r}",
        )


def parse_config(cfg: Mapping[str, Any]) -> DataConfig:
    """Turn the plain (Hydra-resolved) mapping into a ``DataConfig`` or raise ``ConfigError``.

    A null value means "unset": the default applies.
    """
    values = {key: value for key, value in cfg.items() if value is not None}
    unknown = sorted(set(values) - set(_COMMON_KEYS) - set(_ONLY_FOR))
    if unknown:
        valid = ", ".join((*_COMMON_KEYS, *_ONLY_FOR))
        raise ConfigError(f"unknown dataset key(s): {', '.join(unknown)} (valid keys: {valid})")

    name = values.get("name")
    if name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name must be one of {', '.join(DATASET_NAMES)}; got {name!r}")
    misplaced = sorted(k for k, owner in _ONLY_FOR.items() if k in values and owner != name)
    if misplaced:
        raise ConfigError(
            f"dataset key(s) {', '.join(misplaced)} do not apply to dataset '{name}' "
            f"(they belong to {', '.join(sorted({_ONLY_FOR[k] for k in misplaced}))})"
        )
    return from_mapping(DataConfig, values, "dataset")
