"""Streamed splits of any dataset: its Datasets (or its tensors as one), carved by the same
seeded shuffle as the in-memory path, fingerprinted, with the normalisation `auto` computes.

The fingerprint needs no pass where the samples are at hand: tensors hash as the in-memory
path hashes them (same data, same fingerprint), a folder dataset hashes its files' relative
paths, labels, sizes and modification times (a changed file is a changed fingerprint; its
headers are checked here, so a file that is not an image is named before training). Any other
Dataset is read once, hashed and checked item by item. `normalize: auto` reads the train
split once (give `dataset.normalize` explicitly to skip that pass).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from compress.data.bundle import Normalization
from compress.data.normalize import check_channels
from compress.data.stacking import Datasets, read_item
from compress.data.streamed import StreamedSplit, last_line
from compress.errors import ConfigError

log = logging.getLogger(__name__)

#: Images per batch of the passes that hash or measure a streamed split.
PASS_BATCH = 256


class TensorItems(Dataset):
    """Whole tensors as a Dataset of (image, label): a tensor source, streamed."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.x[index], int(self.y[index])


def streamed_splits(
    found: Datasets,
    train_idx: torch.Tensor,
    val_idx: torch.Tensor,
    template: StreamedSplit,
) -> dict[str, StreamedSplit]:
    """The train, val and test splits as `template` with their items and rows (val from its
    own Dataset, else the carved rows of train)."""
    test = (found.test, torch.arange(len(found.test)))  # type: ignore[arg-type]
    if found.val is not None:
        val = (found.val, torch.arange(len(found.val)))  # type: ignore[arg-type]
    else:
        val = (found.train, val_idx)
    parts = {"train": (found.train, train_idx), "val": val, "test": test}
    return {
        key: replace(template, items=items, rows=rows, split=key)
        for key, (items, rows) in parts.items()
    }


def fingerprint_streamed(name: str, splits: dict[str, StreamedSplit], extra: str) -> str | None:
    """The fingerprint without a pass, where the items allow (None: a pass is needed)."""
    digest = hashlib.sha256(name.encode())
    if extra:
        digest.update(extra.encode())
    for key, split in splits.items():
        items, rows = split.items, split.rows
        if isinstance(items, TensorItems):
            x, y = items.x[rows], items.y[rows]
            digest.update(f"|{key}:{tuple(x.shape)}:{x.dtype}:{len(y)}|".encode())
            for tensor in (x, y):
                digest.update(np.ascontiguousarray(tensor.numpy()).data)
        elif isinstance(getattr(items, "samples", None), list) and getattr(items, "root", None):
            digest.update(f"|{key}:files:{len(rows)}|".encode())
            digest.update(_file_records(items, rows, split.where).encode())
        else:
            return None
    return digest.hexdigest()[:16]


def _file_records(items: Dataset, rows: torch.Tensor, where: str) -> str:
    """One line per file of `rows`: relative path, label, size, mtime; every header checked."""
    root = Path(items.root)  # type: ignore[attr-defined]
    samples = [items.samples[i] for i in rows.tolist()]  # type: ignore[attr-defined]
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 2)) as pool:
        records = list(pool.map(lambda sample: _record(root, sample, where), samples))
    return "\n".join(records)


def _record(root: Path, sample: tuple[str, int], where: str) -> str:
    from PIL import Image, UnidentifiedImageError

    path, label = sample
    stat = os.stat(path)
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (the header is parsed here)
    except (UnidentifiedImageError, OSError) as error:
        raise ConfigError(f"{where}: file {path} could not be read ({error})") from error
    return f"{Path(path).relative_to(root.parent)}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}"


def prepared_batches(split: StreamedSplit, *, prepare: bool = True) -> Iterator[tuple]:
    """(images, labels) of `split` in row order, in their source dtype, read by its workers
    (`prepare=False`: the images as the source gives them)."""
    rows = split.rows_dataset() if prepare else replace(split, prepare=None).rows_dataset()
    loader = DataLoader(rows, batch_size=PASS_BATCH, num_workers=split.workers)
    try:
        for x, y, _ in loader:
            yield x, y
    except ConfigError as error:
        raise ConfigError(last_line(str(error))) from None


def hash_by_pass(name: str, splits: dict[str, StreamedSplit], extra: str) -> tuple[str, int]:
    """The in-memory path's fingerprint of the same items, by one pass; also the largest
    label (a Dataset of unknown classes)."""
    digest = hashlib.sha256(name.encode())
    if extra:
        digest.update(extra.encode())
    top = -1
    for key, split in splits.items():
        first, _ = read_item(split.items, key, int(split.rows[0]), split.where)
        digest.update(f"|{key}:{(len(split), *first.shape)}:{first.dtype}:{len(split)}|".encode())
        labels = []
        for x, y in prepared_batches(split, prepare=False):
            if x.shape[1:] != first.shape or x.dtype != first.dtype:
                raise ConfigError(
                    f"{split.where}: {key} images are not all {first.dtype} {tuple(first.shape)}"
                )
            digest.update(np.ascontiguousarray(x.numpy()).data)
            labels.append(y)
        y_all = torch.cat(labels).to(torch.int64)
        top = max(top, int(y_all.max()))
        digest.update(np.ascontiguousarray(y_all.numpy()).data)
    return digest.hexdigest()[:16], top


def normalization_of(split: StreamedSplit, value: object) -> Normalization:
    """What `dataset.normalize` applies to streamed data (`auto`: one pass over train)."""
    from compress.data.normalize import statistics

    channels = int(split.image_shape[0])
    check_channels(value, channels)  # type: ignore[arg-type]

    def train_chunks() -> Iterator[torch.Tensor]:
        log.info(
            "normalize=auto: reading the %d train images once for their statistics", len(split)
        )
        return (x for x, _ in prepared_batches(split))

    return statistics(value, channels, train_chunks, split.scale)  # type: ignore[arg-type]
