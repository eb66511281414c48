"""`load_dataset(cfg, device)`: the one way every part of the lab gets its data."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch

from compress.data.base import parse_dataset
from compress.data.bundle import DataBundle
from compress.data.normalize import salt
from compress.data.splits import carve, fingerprint, normalise

logger = logging.getLogger(__name__)


def load_dataset(cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> DataBundle:
    """Load, split, fingerprint and normalise (`dataset.normalize`) the dataset `cfg` names.

    Raises `ConfigError` for bad config values and `DatasetMissingError` when files are absent.
    The same `cfg` always gives identical tensors and the same fingerprint.
    """
    config = parse_dataset(cfg)
    name = config.label()
    start = time.perf_counter()
    # One generator drives every random choice in a fixed order, so split_seed pins them all.
    generator = torch.Generator().manual_seed(config.split_seed)
    raw = config.load_raw(generator)
    splits = carve(raw, config.val_fraction, config.train_subset, generator)
    digest = fingerprint(name, splits, salt(config.normalize))
    final, normalization = normalise(splits, raw.scale, torch.device(device), config.normalize)
    class_names = raw.class_names or tuple(str(label) for label in range(raw.num_classes))
    bundle = DataBundle(
        name=name,
        train=final["train"],
        val=final["val"],
        test=final["test"],
        input_shape=tuple(final["train"].x.shape[1:]),
        num_classes=raw.num_classes,
        fingerprint=digest,
        class_names=tuple(class_names),
        normalization=normalization,
    )
    logger.info(
        "dataset %s: %d train / %d val / %d test, shape %s, %d classes, fingerprint %s (%.2f s)",
        bundle.name,
        len(bundle.train),
        len(bundle.val),
        len(bundle.test),
        bundle.input_shape,
        bundle.num_classes,
        bundle.fingerprint,
        time.perf_counter() - start,
    )
    return bundle
