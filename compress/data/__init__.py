"""Datasets as whole, normalised tensors on the target device, described by one config mapping.

Public API: ``load_dataset``, ``DataBundle``, ``Split`` and ``DATASET_NAMES``.
"""

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch

from compress.data.bundle import DataBundle, RawData, Split
from compress.data.config import DATASET_NAMES, DataConfig, parse_config
from compress.data.digits import load_digits_raw
from compress.data.fake import make_fake_raw
from compress.data.splits import carve, fingerprint, normalise
from compress.data.vision import load_vision_raw

__all__ = ["DATASET_NAMES", "DataBundle", "Split", "load_dataset"]

logger = logging.getLogger(__name__)


def load_dataset(cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> DataBundle:
    """Load, split, fingerprint and normalise the dataset that ``cfg`` names.

    Raises ``ConfigError`` for bad config values and ``DatasetMissingError`` when files are absent.
    The same ``cfg`` always gives identical tensors and the same fingerprint.
    """
    config = parse_config(cfg)
    start = time.perf_counter()
    # One generator drives every random choice in a fixed order, so split_seed pins them all.
    generator = torch.Generator().manual_seed(config.split_seed)
    raw = _load_raw(config, generator)
    splits = carve(raw, config.val_fraction, config.train_subset, generator)
    digest = fingerprint(config.name, splits)
    final = normalise(splits, raw.scale, torch.device(device))
    bundle = DataBundle(
        name=config.name,
        train=final["train"],
        val=final["val"],
        test=final["test"],
        input_shape=tuple(final["train"].x.shape[1:]),
        num_classes=raw.num_classes,
        fingerprint=digest,
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


def _load_raw(config: DataConfig, generator: torch.Generator) -> RawData:
    if config.name == "digits":
        return load_digits_raw(config.test_fraction, generator)
    if config.name == "fake":
        return make_fake_raw(
            config.num_train,
            config.num_test,
            config.shape,
            config.num_classes,
            config.noise,
            generator,
        )
    return load_vision_raw(config.name, config.root, config.download)
