"""scikit-learn's digits, read straight from the CSV it ships, to skip ~3 s of sklearn import."""

import gzip
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from compress.config import require
from compress.data.base import DatasetConfig
from compress.data.bundle import RawData
from compress.errors import DatasetMissingError

logger = logging.getLogger(__name__)

_NUM_CLASSES = 10
_MAX_PIXEL = 16.0


def digits_csv_path() -> Path | None:
    """Where scikit-learn keeps ``digits.csv.gz``, found without importing sklearn (or None)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits in scikit-learn's order: uint8 images (N, 8, 8) in 0..16, int64 labels."""
    path = digits_csv_path()
    if path is not None:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        logger.info("digits.csv.gz not found next to scikit-learn; using load_digits()")
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise DatasetMissingError(
                "dataset 'digits': scikit-learn is not installed; install scikit-learn"
            ) from exc
        pixels, labels = load_digits(return_X_y=True)
    return pixels.astype(np.uint8).reshape(-1, 8, 8), labels.astype(np.int64)


def load_digits_raw(test_fraction: float, generator: torch.Generator) -> RawData:
    """Digits with a seeded test split carved out, since the dataset has no official one."""
    pixels, labels = read_digits()
    x = torch.from_numpy(pixels).unsqueeze(1)
    y = torch.from_numpy(labels)
    order = torch.randperm(len(y), generator=generator)
    n_test = round(test_fraction * len(y))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return RawData(
        x_train=x[train_idx],
        y_train=y[train_idx],
        x_test=x[test_idx],
        y_test=y[test_idx],
        num_classes=_NUM_CLASSES,
        scale=1.0 / _MAX_PIXEL,
    )


@dataclass(frozen=True)
class DigitsConfig(DatasetConfig):
    """scikit-learn's 1797 8x8 digits; `test_fraction` of them become the test split."""

    name: ClassVar[str] = "digits"

    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            math.isfinite(self.test_fraction) and 0 < self.test_fraction < 1,
            f"dataset.test_fraction must be a fraction in (0, 1); got {self.test_fraction!r}",
        )

    def load_raw(self, generator: torch.Generator) -> RawData:
        return load_digits_raw(self.test_fraction, generator)
