"""Where records come from: an image folder, Parquet shards, NumPy arrays, or arrays already in memory (the built-in
dataset). Every source is read through `pyarrow.fs` (the layer checkpoints use), so a local path, a shared mount and
`s3://bucket/prefix` (with `AWS_ENDPOINT_URL` for MinIO and the like) read the same way on every node.

A source is a list of shards (each a known number of records) and a reader of one shard. A record is
`(payload, label, where)`: the encoded image bytes (or a function returning them, for files read only when
decoded; or a float array for NumPy sources), the integer label (-1 when
the source is unlabelled), and a name for error messages (`file`, `file#row`). Nothing is decoded here
(shared/data/decode.py does that), so a stream can skip records cheaply when it resumes.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from shared.data.arrays import ArraySource, NumpySource
from shared.data.errors import DataError
from shared.data.files import ReadLimits, file_info, list_files
from shared.data.folders import FolderSource
from shared.data.latents import MANIFEST, LatentSource
from shared.data.parquet import ParquetSource
from shared.data.shards import MAX_SOURCE_RECORDS, Record, Shard, Source
from shared.storage import Storage, StorageError

FORMATS = ("folder", "parquet", "numpy", "latents")

__all__ = [
    "FORMATS",
    "MAX_SOURCE_RECORDS",
    "ArraySource",
    "FolderSource",
    "LatentSource",
    "NumpySource",
    "ParquetSource",
    "ReadLimits",
    "Record",
    "Shard",
    "Source",
    "infer_format",
    "open_source",
]


def infer_format(storage: Storage) -> str:
    """The format of a source from its path: a .npy/.npz file, a latent cache (a folder with latents.json), a
    .parquet file or a folder of them, else a folder of images."""
    path = storage.root.lower()
    if path.endswith((".npy", ".npz")):
        return "numpy"
    if path.endswith(".parquet"):
        return "parquet"
    info = file_info(storage, storage.root)
    if info.type == pafs.FileType.File:
        raise DataError(f"{storage.uri}: cannot tell the format of this file; expected .parquet, .npy or .npz")
    names = list_files(storage, storage.root)
    if MANIFEST in names:
        return "latents"
    if any(n.lower().endswith(".parquet") for n in names):
        return "parquet"
    return "folder"


def open_source(
    uri: str,
    *,
    format: str = "auto",
    image_column: str | None = None,
    label_column: str | None = None,
    limits: ReadLimits = ReadLimits(),
):
    """Open a source (nothing is decoded); DataError names the path and the reason when it cannot be used."""
    try:
        storage = Storage.from_uri(uri)
    except StorageError as err:
        raise DataError(str(err)) from None
    fmt = infer_format(storage) if format == "auto" else format
    if fmt == "folder":
        return FolderSource(storage, label_column=label_column, limits=limits)
    if fmt == "parquet":
        return ParquetSource(storage, image_column=image_column, label_column=label_column, limits=limits)
    if fmt == "numpy":
        return NumpySource(storage, image_column=image_column, label_column=label_column, limits=limits)
    if fmt == "latents":
        return LatentSource(storage, limits=limits)
    raise DataError(f"data.format {fmt!r}: expected one of {('auto', *FORMATS)}")
