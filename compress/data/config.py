"""Validate the dataset config once, so every loader can trust its values."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    root: Path | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None
    test_fraction: float = 0.2
    num_train: int = 512
    num_test: int = 256
    shape: tuple[int, int, int] = (1, 8, 8)
    num_classes: int = 10
    noise: float = 0.5


def parse_config(cfg: Mapping[str, Any]) -> DataConfig:
    """Turn the plain (Hydra-resolved) mapping into a ``DataConfig`` or raise ``ConfigError``."""
    values = dict(cfg)
    unknown = sorted(set(values) - set(_COMMON_KEYS) - set(_ONLY_FOR))
    if unknown:
        valid = ", ".join((*_COMMON_KEYS, *_ONLY_FOR))
        raise ConfigError(f"unknown dataset key(s): {', '.join(unknown)} (valid keys: {valid})")

    name = values.get("name")
    if name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name must be one of {', '.join(DATASET_NAMES)}; got {name!r}")
    misplaced = sorted(
        k for k, owner in _ONLY_FOR.items() if values.get(k) is not None and owner != name
    )
    if misplaced:
        raise ConfigError(
            f"dataset key(s) {', '.join(misplaced)} do not apply to dataset '{name}' "
            f"(they belong to {', '.join(sorted({_ONLY_FOR[k] for k in misplaced}))})"
        )

    defaults = DataConfig(name=name)
    root = values.get("root")
    if root is not None and not isinstance(root, str | Path):
        raise ConfigError(f"dataset.root must be a path string or null; got {root!r}")
    subset = values.get("train_subset")
    return DataConfig(
        name=name,
        root=None if root is None else Path(root).expanduser().resolve(),
        download=_bool(values, "download", defaults.download),
        val_fraction=_fraction(values, "val_fraction", defaults.val_fraction, allow_zero=True),
        split_seed=_int(values, "split_seed", defaults.split_seed, minimum=0),
        train_subset=None if subset is None else _int(values, "train_subset", 0, minimum=1),
        test_fraction=_fraction(values, "test_fraction", defaults.test_fraction, allow_zero=False),
        num_train=_int(values, "num_train", defaults.num_train, minimum=1),
        num_test=_int(values, "num_test", defaults.num_test, minimum=1),
        shape=_shape(values, defaults.shape),
        num_classes=_int(values, "num_classes", defaults.num_classes, minimum=2),
        noise=_number(values, "noise", defaults.noise, minimum=0.0),
    )


def _get(values: dict[str, Any], key: str, default: Any) -> Any:
    value = values.get(key)
    return default if value is None else value


def _bool(values: dict[str, Any], key: str, default: bool) -> bool:
    value = _get(values, key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"dataset.{key} must be true or false; got {value!r}")
    return value


def _int(values: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = _get(values, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"dataset.{key} must be an integer >= {minimum}; got {value!r}")
    return value


def _number(values: dict[str, Any], key: str, default: float, minimum: float) -> float:
    value = _get(values, key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigError(f"dataset.{key} must be a number >= {minimum}; got {value!r}")
    return float(value)


def _fraction(values: dict[str, Any], key: str, default: float, allow_zero: bool) -> float:
    value = _get(values, key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (0.0 <= value < 1.0) or (value == 0.0 and not allow_zero):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"dataset.{key} must be a fraction in {interval}; got {value!r}")
    return float(value)


def _shape(values: dict[str, Any], default: tuple[int, int, int]) -> tuple[int, int, int]:
    value = _get(values, "shape", default)
    dims = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else ()
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ConfigError(
            f"dataset.shape must be three positive integers [channels, height, width]; "
            f"got {value!r}"
        )
    return (dims[0], dims[1], dims[2])
