"""Datasets as whole, normalised tensors on the target device, described by one config mapping.

Each dataset is a `DatasetConfig` subclass in a module of this package (found by its `name`
without any import list), or anywhere else through `_target_`.
"""

from compress.data.base import DatasetConfig, dataset_names, parse_dataset
from compress.data.bundle import DataBundle, Normalization, RawData, Split
from compress.data.load import load_dataset

__all__ = [
    "DataBundle",
    "DatasetConfig",
    "Normalization",
    "RawData",
    "Split",
    "dataset_names",
    "load_dataset",
    "parse_dataset",
]
