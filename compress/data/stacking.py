"""Datasets given as `torch.utils.data.Dataset`s (an image folder, a user's factory), stacked
into the whole tensors the in-memory path trains from.

A `DatasetsConfig` says how to build its train / test (and optional val) Datasets in
`datasets()`; `load_raw` reads every item once and stacks them. A streamed path can take the
same `datasets()` and hand them to a DataLoader instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.data import Dataset

from compress.data.base import DatasetConfig
from compress.data.bundle import RawData
from compress.errors import ConfigError


@dataclass(frozen=True)
class Datasets:
    """A source's splits as Datasets whose items are (image tensor (C, H, W), int label)."""

    train: Dataset
    test: Dataset
    val: Dataset | None = None
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetsConfig(DatasetConfig):
    """A dataset read from `torch.utils.data.Dataset`s; subclasses define `datasets()`."""

    def datasets(self) -> Datasets:
        raise NotImplementedError(f"{type(self).__qualname__} does not define datasets()")

    def load_raw(self, generator: torch.Generator) -> RawData:
        return stacked_raw(self.datasets(), f"dataset '{self.label()}'")


def stacked_raw(found: Datasets, where: str) -> RawData:
    """Every item of every split of `found`, read once and stacked into tensors."""
    splits = {"train": found.train, "test": found.test}
    if found.val is not None:
        splits["val"] = found.val
    stacked = {key: stack(ds, key, where) for key, ds in splits.items()}
    return raw_data(stacked, found.class_names, where)


def stack(dataset: Dataset, split: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of `dataset` as one (N, C, H, W) image tensor (its items' dtype) and int64
    labels; an item that cannot be read or does not fit is a one-line ConfigError naming it."""
    try:
        count = len(dataset)  # type: ignore[arg-type]
    except TypeError as error:
        raise ConfigError(f"{where}: the {split} Dataset has no len() ({error})") from error
    if count == 0:
        raise ConfigError(f"{where}: the {split} split is empty")
    name = partial(item_name, dataset)
    images: torch.Tensor | None = None
    labels = torch.empty(count, dtype=torch.int64)
    for index in range(count):
        image, label = read_item(dataset, split, index, where)
        if images is None:
            images = torch.empty((count, *image.shape), dtype=image.dtype)
        elif image.shape != images.shape[1:] or image.dtype != images.dtype:
            raise ConfigError(
                f"{where}: {name(split, index)} is a {image.dtype} image of shape "
                f"{tuple(image.shape)}, the first is {images.dtype} {tuple(images.shape[1:])}; "
                "all images need one size (dataset.image_size resizes an image folder)"
            )
        images[index] = image
        labels[index] = label
    assert images is not None
    return images, labels


def item_name(dataset: Dataset, split: str, index: int) -> str:
    """`file PATH` for a torchvision folder dataset (it lists `samples`), else `train item 3`."""
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and index < len(samples) and isinstance(samples[index], tuple):
        return f"file {samples[index][0]}"
    return f"{split} item {index}"


def read_item(dataset: Dataset, split: str, index: int, where: str) -> tuple[torch.Tensor, int]:
    """Item `index` as a (C, H, W) uint8 or float image and an int label; anything else is a
    one-line ConfigError naming the item (its file, for a folder dataset)."""
    name = partial(item_name, dataset)
    try:
        item = dataset[index]
    except Exception as error:  # a user's Dataset or a file: any failure is reported alike
        raise ConfigError(
            f"{where}: {name(split, index)} could not be read ({_line(error)})"
        ) from error
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise ConfigError(
            f"{where}: {name(split, index)} must be a pair (image tensor, int label); "
            f"got {type(item).__name__}"
        )
    image, label = item
    if isinstance(image, torch.Tensor) and image.dim() == 2:
        image = image.unsqueeze(0)  # (H, W): one channel
    if not (isinstance(image, torch.Tensor) and image.dim() == 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ConfigError(
            f"{where}: {name(split, index)}'s image must be a (C, H, W) tensor; got {shape}"
        )
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise ConfigError(
            f"{where}: {name(split, index)}'s image must be uint8 or float; got {image.dtype}"
        )
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        label = int(label.item())
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        raise ConfigError(
            f"{where}: {name(split, index)}'s label must be an int >= 0; got {label!r}"
        )
    return image, label


def raw_data(
    stacked: dict[str, tuple[torch.Tensor, torch.Tensor]],
    class_names: tuple[str, ...] | None,
    where: str,
) -> RawData:
    """The stacked splits as RawData: one image shape and dtype, labels within the classes."""
    x_train = stacked["train"][0]
    for key, (x, _) in stacked.items():
        if x.shape[1:] != x_train.shape[1:] or x.dtype != x_train.dtype:
            raise ConfigError(
                f"{where}: {key} images are {x.dtype} {tuple(x.shape[1:])} but train images are "
                f"{x_train.dtype} {tuple(x_train.shape[1:])}"
            )
    top = max(int(y.max()) for _, y in stacked.values())
    num_classes = len(class_names) if class_names else top + 1
    if top >= num_classes:
        raise ConfigError(f"{where}: label {top} is out of range for {num_classes} classes")
    if num_classes < 2:
        raise ConfigError(f"{where}: needs at least 2 classes; found {num_classes}")
    val = stacked.get("val", (None, None))
    return RawData(
        x_train=x_train,
        y_train=stacked["train"][1],
        x_test=stacked["test"][0],
        y_test=stacked["test"][1],
        num_classes=num_classes,
        scale=1.0 / 255.0 if x_train.dtype == torch.uint8 else 1.0,
        class_names=class_names,
        x_val=val[0],
        y_val=val[1],
    )


def _line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
