"""`load_dataset(cfg, device)`: the one way every part of the lab gets its data.

Data that fits (`dataset.in_memory`, `memory_limit_gb`) becomes whole normalised tensors on
the device; other data streams through a DataLoader. Both carve, fingerprint and normalise
the same way, and give their batches through the same `Split.loader`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from compress.data.base import DatasetConfig, parse_dataset
from compress.data.bundle import DataBundle, Normalization, RawData, Split
from compress.data.normalize import NormalizeValue, salt, statistics
from compress.data.preprocess import Preprocessing
from compress.data.splits import carve, carve_rows, chunks, fingerprint, normalise
from compress.data.stacking import Datasets, read_item, stacked_raw
from compress.data.stream_load import (
    TensorItems,
    fingerprint_streamed,
    hash_by_pass,
    normalization_of,
    streamed_splits,
)
from compress.data.streamed import StreamedSplit
from compress.errors import ConfigError

logger = logging.getLogger(__name__)


def load_dataset(
    cfg: Mapping[str, Any],
    device: torch.device | str = "cpu",
    preprocessing: Preprocessing | None = None,
) -> DataBundle:
    """Load, split, fingerprint and normalise (`dataset.normalize`) the dataset `cfg` names;
    `preprocessing` (a model's weights' transforms) resizes and normalises for those weights.

    Raises `ConfigError` for bad config values and `DatasetMissingError` when files are absent.
    The same `cfg` always gives identical inputs and the same fingerprint.
    """
    config = parse_dataset(cfg)
    start = time.perf_counter()
    normalize = preprocessing.normalize(config.normalize) if preprocessing else config.normalize
    if preprocessing is not None:
        logger.info("inputs as the model's weights expect them: %s", preprocessing)
    extra = salt(normalize) + (preprocessing.salt() if preprocessing else "")
    # One generator drives every random choice in a fixed order, so split_seed pins them all.
    generator = torch.Generator().manual_seed(config.split_seed)
    where = f"dataset '{config.label()}'"
    make = getattr(config, "datasets", None)  # a source of Datasets, read only when needed
    raw = None if make is not None else config.load_raw(generator)
    found = make() if make is not None else _as_datasets(raw)  # type: ignore[arg-type]
    train_idx, val_idx = carve_rows(
        len(found.train),  # type: ignore[arg-type]
        found.val is not None,
        config.val_fraction,
        config.train_subset,
        generator,
    )
    first, _ = read_item(found.train, "train", int(train_idx[0]), where)
    shape = preprocessing.image_shape(tuple(first.shape)) if preprocessing else tuple(first.shape)
    count = len(train_idx) + len(val_idx) + len(found.test)  # type: ignore[arg-type]
    count += len(found.val) if found.val is not None else 0  # type: ignore[arg-type]
    streams = config.should_stream(count, shape)
    args = ((train_idx, val_idx), normalize, extra, preprocessing)
    if streams:
        scale = raw.scale if raw is not None else 1.0 / 255.0 if first.dtype == torch.uint8 else 1.0
        known = raw.num_classes if raw is not None else None
        bundle = _streamed(config, found, *args, torch.device(device), scale, shape, known)
    else:
        raw = raw if raw is not None else stacked_raw(found, where)
        bundle = _in_memory(config, *args, torch.device(device), raw)
    logger.info(
        "dataset %s: %d train / %d val / %d test, shape %s, %d classes, %s, fingerprint %s "
        "(%.2f s)",
        bundle.name, len(bundle.train), len(bundle.val), len(bundle.test), bundle.input_shape,
        bundle.num_classes, "streamed" if streams else "in memory", bundle.fingerprint,
        time.perf_counter() - start,
    )  # fmt: skip
    return bundle


def _as_datasets(raw: RawData) -> Datasets:
    val = TensorItems(raw.x_val, raw.y_val) if raw.x_val is not None else None  # type: ignore[arg-type]
    return Datasets(
        TensorItems(raw.x_train, raw.y_train), TensorItems(raw.x_test, raw.y_test), val,
        raw.class_names,
    )  # fmt: skip


def _in_memory(
    config: DatasetConfig,
    rows: tuple[torch.Tensor, torch.Tensor],
    normalize: NormalizeValue,
    extra: str,
    preprocessing: Preprocessing | None,
    device: torch.device,
    raw: RawData,
) -> DataBundle:
    splits = carve(raw, *rows)
    digest = fingerprint(config.label(), splits, extra)
    if preprocessing is not None:
        splits = {k: (preprocessing.apply_in_chunks(x), y) for k, (x, y) in splits.items()}
    train_x = splits["train"][0]
    normalization = statistics(normalize, int(train_x.shape[1]), lambda: chunks(train_x), raw.scale)
    final = normalise(splits, raw.scale, device, normalization)
    return _bundle(config, final, digest, raw.num_classes, raw.class_names, normalization)


def _streamed(
    config: DatasetConfig,
    found: Datasets,
    rows: tuple[torch.Tensor, torch.Tensor],
    normalize: NormalizeValue,
    extra: str,
    preprocessing: Preprocessing | None,
    device: torch.device,
    scale: float,
    shape: tuple[int, ...],
    num_classes: int | None,
) -> DataBundle:
    where = f"dataset '{config.label()}'"
    template = StreamedSplit(
        items=found.train,
        rows=rows[0],
        scale=scale,
        normalization=Normalization("none", (0.0,) * shape[0], (1.0,) * shape[0]),
        device=device,
        image_shape=shape,
        workers=config.workers,
        prepare=preprocessing.apply if preprocessing is not None else None,
        where=where,
    )
    splits = streamed_splits(found, *rows, template)
    digest, top = fingerprint_streamed(config.label(), splits, extra), -1
    if digest is None:
        digest, top = hash_by_pass(config.label(), splits, extra)
    names = found.class_names
    num_classes = num_classes or (len(names) if names else top + 1)
    if top >= num_classes:
        raise ConfigError(f"{where}: label {top} is out of range for {num_classes} classes")
    if num_classes < 2:
        raise ConfigError(f"{where}: needs at least 2 classes; found {num_classes}")
    normalization = normalization_of(splits["train"], normalize)
    final = {key: replace(split, normalization=normalization) for key, split in splits.items()}
    return _bundle(config, final, digest, num_classes, names, normalization)


def _bundle(
    config: DatasetConfig,
    final: Mapping[str, Split],
    digest: str,
    num_classes: int,
    class_names: tuple[str, ...] | None,
    normalization: Normalization,
) -> DataBundle:
    return DataBundle(
        name=config.label(),
        train=final["train"],
        val=final["val"],
        test=final["test"],
        input_shape=final["train"].image_shape,
        num_classes=num_classes,
        fingerprint=digest,
        class_names=tuple(class_names or (str(label) for label in range(num_classes))),
        normalization=normalization,
    )
