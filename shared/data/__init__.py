"""The data layer: sources (built-in, image folder, Parquet, NumPy; local or S3), decoding, splits, batches from
memory or streamed, and the resolution of a config's data facts before a run starts. docs/data.md."""

from shared.data.builtin import DATASETS, DatasetInfo
from shared.data.errors import DataError
from shared.data.resolve import DataShape, data_shape, resolve_images
from shared.data.splits import load_split, open_split
from shared.data.stream import Batches, MemoryBatches, StreamBatches, train_batches

__all__ = [
    "DATASETS",
    "Batches",
    "DataError",
    "DataShape",
    "DatasetInfo",
    "MemoryBatches",
    "StreamBatches",
    "data_shape",
    "load_split",
    "open_split",
    "resolve_images",
    "train_batches",
]
