"""Images in class folders (`root/train/<class>/*`, `root/test/<class>/*`, optional
`root/val/<class>/*`), read with torchvision's ImageFolder and its PIL loader.

The layout is checked before any image is decoded, so a missing folder, an empty class or
classes that differ between splits cost one line; a file PIL cannot read is named when it is
reached. Hidden files (`.DS_Store`) are skipped; any other file must be an image.
torchvision is imported inside `datasets()`: seconds the default run should not pay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compress.config import require
from compress.data.stacking import Datasets, DatasetsConfig
from compress.errors import ConfigError, DatasetMissingError

SPLITS = ("train", "test", "val")


@dataclass(frozen=True)
class ImageFolderConfig(DatasetsConfig):
    """An ImageFolder tree under `root`; `image_size` resizes (an int for square, or [H, W]),
    `channels` is 1 (grayscale) or 3 (RGB). With a `val/` folder, `val_fraction` is not used."""

    name: ClassVar[str] = "image_folder"

    image_size: int | list[int] | None = None
    channels: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.channels in (1, 3), f"dataset.channels must be 1 or 3; got {self.channels!r}")
        size = self.size()
        require(
            size is None or (len(size) == 2 and all(d >= 1 for d in size)),
            "dataset.image_size must be a positive integer, [height, width] or null; "
            f"got {self.image_size!r}",
        )

    def size(self) -> tuple[int, ...] | None:
        if self.image_size is None:
            return None
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        return tuple(self.image_size)

    def folders(self) -> dict[str, Path]:
        """The split folders present, after checking the layout (one line per problem)."""
        if self.root is None:
            raise ConfigError(
                "dataset 'image_folder' needs dataset.root: the folder holding train/<class>/* "
                "and test/<class>/*"
            )
        root = Path(self.root)
        if not root.is_dir():
            raise DatasetMissingError(f"dataset 'image_folder': root {root} is not a folder")
        found = {split: root / split for split in SPLITS if (root / split).is_dir()}
        for split in ("train", "test"):
            if split not in found:
                raise DatasetMissingError(
                    f"dataset 'image_folder': no {split}/ folder in {root} "
                    "(expected train/<class>/*, test/<class>/* and optionally val/<class>/*)"
                )
        classes = {split: class_folders(folder) for split, folder in found.items()}
        for split, names in classes.items():
            if split != "train" and names != classes["train"]:
                raise ConfigError(
                    f"dataset 'image_folder': {split}/ and train/ hold different classes "
                    f"({_difference(classes['train'], names, split)})"
                )
        return found

    def datasets(self) -> Datasets:
        folders = self.folders()
        from torchvision import datasets
        from torchvision.transforms import v2

        steps: list[Any] = [v2.Grayscale(1)] if self.channels == 1 else []
        size = self.size()
        if size is not None:
            steps.append(v2.Resize(list(size)))
        transform = v2.Compose([*steps, v2.PILToTensor()])  # uint8 (C, H, W); RGB from the loader
        found = {
            split: datasets.ImageFolder(str(folder), transform=transform, is_valid_file=_visible)
            for split, folder in folders.items()
        }
        return Datasets(
            train=found["train"],
            test=found["test"],
            val=found.get("val"),
            class_names=tuple(found["train"].classes),
        )


def class_folders(folder: Path) -> tuple[str, ...]:
    """The class names under a split folder (sorted, as ImageFolder orders them); an empty
    split or class folder is a one-line error naming it."""
    names = tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir() and _visible(e.name)))
    if not names:
        raise DatasetMissingError(
            f"dataset 'image_folder': {folder} has no class folders (expected {folder}/<class>/*)"
        )
    for name in names:
        if not any(_visible(f) for _, _, files in os.walk(folder / name) for f in files):
            raise DatasetMissingError(
                f"dataset 'image_folder': class folder {folder / name} is empty"
            )
    return names


def _visible(path: str) -> bool:
    return not Path(path).name.startswith(".")


def _difference(train: tuple[str, ...], other: tuple[str, ...], split: str) -> str:
    parts = []
    if missing := sorted(set(train) - set(other)):
        parts.append(f"missing in {split}/: {', '.join(missing)}")
    if extra := sorted(set(other) - set(train)):
        parts.append(f"only in {split}/: {', '.join(extra)}")
    return "; ".join(parts)
