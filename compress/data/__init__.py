"""Datasets in memory (whole normalised tensors on the device) or streamed (a DataLoader),
described by one config mapping; both give batches through `Split.loader`.

Each dataset is a `DatasetConfig` subclass in a module of this package (found by its `name`
without any import list), or anywhere else through `_target_`.
"""

from compress.data.base import DatasetConfig, dataset_names, parse_dataset
from compress.data.bundle import Batch, DataBundle, Normalization, RawData, Shard, Split
from compress.data.load import load_dataset
from compress.data.preprocess import Preprocessing
from compress.data.streamed import StreamedSplit
from compress.data.tensors import TensorSplit

__all__ = [
    "Batch",
    "DataBundle",
    "DatasetConfig",
    "Normalization",
    "Preprocessing",
    "RawData",
    "Shard",
    "Split",
    "StreamedSplit",
    "TensorSplit",
    "dataset_names",
    "load_dataset",
    "parse_dataset",
]
