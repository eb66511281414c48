"""torchvision's image datasets as whole uint8 tensors, with our own one-line missing-file errors.

torchvision is imported inside ``load_vision_raw`` because importing it costs seconds that the
default (digits) run should not pay.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from compress.data.base import DatasetConfig
from compress.data.bundle import RawData
from compress.downloads import socket_timeout
from compress.errors import ConfigError, DatasetMissingError

logger = logging.getLogger(__name__)

# Seconds a single socket operation may stall during a download before it counts as failed.
_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Layout:
    """Where a torchvision dataset class expects its files (checked against torchvision 0.29)."""

    class_name: str
    folder: str
    files: tuple[str, ...]
    num_classes: int


LAYOUTS: dict[str, Layout] = {
    "mnist": Layout("MNIST", "MNIST/raw", _IDX_FILES, 10),
    "fashion_mnist": Layout("FashionMNIST", "FashionMNIST/raw", _IDX_FILES, 10),
    "cifar10": Layout(
        "CIFAR10",
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        10,
    ),
    "cifar100": Layout("CIFAR100", "cifar-100-python", ("train", "test", "meta"), 100),
}


@dataclass(frozen=True)
class VisionDatasetConfig(DatasetConfig):
    """A torchvision dataset read from `root` (its official train and test splits)."""

    def load_raw(self, generator: torch.Generator) -> RawData:
        root = None if self.root is None else Path(self.root)
        return load_vision_raw(self.label(), root, self.download)


@dataclass(frozen=True)
class MNISTConfig(VisionDatasetConfig):
    name: ClassVar[str] = "mnist"


@dataclass(frozen=True)
class FashionMNISTConfig(VisionDatasetConfig):
    name: ClassVar[str] = "fashion_mnist"


@dataclass(frozen=True)
class CIFAR10Config(VisionDatasetConfig):
    name: ClassVar[str] = "cifar10"


@dataclass(frozen=True)
class CIFAR100Config(VisionDatasetConfig):
    name: ClassVar[str] = "cifar100"


def missing_message(name: str, folder: Path, missing: list[str], files: tuple[str, ...]) -> str:
    """The single line that tells the user which files to put where."""
    found = "" if len(missing) == len(files) else f"; missing {', '.join(missing)}"
    return f"dataset '{name}': files not found in {folder} (expected {', '.join(files)}{found})"


def load_vision_raw(name: str, root: Path | None, download: bool) -> RawData:
    """Official train and test splits of a torchvision dataset, read in one piece each."""
    if root is None:
        raise ConfigError(
            f"dataset '{name}' needs dataset.root: set it to the folder that holds the files "
            "(or should receive them with dataset.download=true)"
        )
    layout = LAYOUTS[name]
    folder = root / layout.folder
    missing = [f for f in layout.files if not (folder / f).is_file()]
    if missing and not download:
        message = missing_message(name, folder, missing, layout.files)
        raise DatasetMissingError(f"{message}; put them there or set dataset.download=true")

    from torchvision import datasets  # lazy: seconds of import time

    dataset_class = getattr(datasets, layout.class_name)
    if missing:
        train = _download(dataset_class, name, root, folder, layout)
    else:
        train = _construct(dataset_class, name, root, folder, train=True)
    test = _construct(dataset_class, name, root, folder, train=False)
    x_train, y_train = _as_tensors(train)
    x_test, y_test = _as_tensors(test)
    names = tuple(str(c) for c in getattr(test, "classes", ())) or None  # "0 - zero", "cat"...
    return RawData(
        x_train, y_train, x_test, y_test, layout.num_classes, scale=1.0 / 255.0, class_names=names
    )


def _download(dataset_class: type, name: str, root: Path, folder: Path, layout: Layout) -> Any:
    """Let torchvision fetch the files; any failure (e.g. offline) becomes a one-line error."""
    logger.info("dataset '%s': downloading into %s", name, root)
    try:
        with socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S):
            return dataset_class(root=str(root), train=True, download=True)
    except Exception as exc:
        missing = [f for f in layout.files if not (folder / f).is_file()]
        message = missing_message(name, folder, missing or list(layout.files), layout.files)
        raise DatasetMissingError(
            f"{message}; download failed ({_one_line(exc)}); "
            "put the files there by hand or retry with network access"
        ) from exc


def _construct(dataset_class: type, name: str, root: Path, folder: Path, train: bool) -> Any:
    """Build the dataset from files already present; unreadable files become a one-line error."""
    try:
        return dataset_class(root=str(root), train=train, download=False)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise DatasetMissingError(
            f"dataset '{name}': files in {folder} could not be read ({_one_line(exc)}); "
            "replace them, or delete them and set dataset.download=true"
        ) from exc


def _as_tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's whole split as uint8 (N, C, H, W) images and int64 labels."""
    data = dataset.data
    if isinstance(data, np.ndarray):  # CIFAR keeps NHWC numpy arrays
        x = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # the MNIST family keeps (N, H, W) tensors
        x = data.unsqueeze(1).contiguous()
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return x, y


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
