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

import csv
import functools
import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shared.data.errors import DataError
from shared.data.paths import is_under
from shared.storage import Storage, StorageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_SHARD = 1024  # files per shard of an image folder
ARRAY_SHARD = 4096  # rows per shard of an array
FORMATS = ("folder", "parquet", "numpy")
MAX_SOURCE_FILES = 2_000_000  # files under one folder or prefix; a longer listing is refused
MAX_SOURCE_RECORDS = 20_000_000  # records of one source: its labels and split mask are held in memory (~200 MB)

Record = tuple[object, int, str]


@dataclass(frozen=True)
class ReadLimits:
    """How far a source is trusted. The defaults suit the machine's own user (`dblocks train`); for a source named
    over the API, `confined`: every file opened must resolve inside the source's own folder (a symlink cannot lead
    out of it), and a file read whole is at most `max_read_bytes` (the config's memory limit), measured first."""

    confined: bool = False
    max_read_bytes: int = 1 << 36


@dataclass(frozen=True)
class Shard:
    name: str  # for messages: a file, or a file and a row range
    num_records: int
    key: object = field(compare=False, repr=False)  # what the source needs to read it


class Source(Protocol):
    uri: str
    format: str
    labelled: bool
    class_names: tuple[str, ...]  # empty when the source names no classes (labels are then 0..max)

    def shards(self) -> list[Shard]: ...

    def read(self, shard: Shard) -> Iterator[Record]: ...

    def labels(self) -> np.ndarray:
        """Every record's label in shard order (int64), without reading the images; -1 when unlabelled."""
        ...


def infer_format(storage: Storage) -> str:
    """The format of a source from its path: a .npy/.npz file, a .parquet file or a folder of them, else a folder
    of images."""
    path = storage.root.lower()
    if path.endswith((".npy", ".npz")):
        return "numpy"
    if path.endswith(".parquet"):
        return "parquet"
    info = file_info(storage, storage.root)
    if info.type == pafs.FileType.File:
        raise DataError(f"{storage.uri}: cannot tell the format of this file; expected .parquet, .npy or .npz")
    names = list_files(storage, storage.root)
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
    raise DataError(f"data.format {fmt!r}: expected one of {('auto', *FORMATS)}")


_DENIED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "AccessDenied", "Forbidden")


def unreadable(what: str, err: OSError, verb: str = "read") -> DataError:
    """The error for a source that could not be opened: a denial says so and points at the credentials."""
    if any(code in str(err) for code in _DENIED):
        return DataError(
            f"{what}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy) ({err})"
        )
    return DataError(f"{what}: cannot be {verb} ({err})")


def file_info(storage: Storage, path: str) -> pafs.FileInfo:
    try:
        info = storage.fs.get_file_info(path)
    except OSError as err:  # unreachable endpoint, denied, no such bucket
        raise unreadable(storage.uri, err) from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"{storage.uri}: does not exist")
    return info


def list_files(storage: Storage, root: str, limits: ReadLimits = ReadLimits()) -> list[str]:
    """Paths of the files under `root` (recursive), relative to it, sorted; at most MAX_SOURCE_FILES. Confined:
    a file that resolves outside `root` (a symlink out of the folder) is refused, never opened."""
    try:
        infos = storage.fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as err:
        raise unreadable(storage.uri, err, "listed") from None
    prefix = root.rstrip("/") + "/"
    names = sorted(i.path[len(prefix) :] for i in infos if i.type == pafs.FileType.File)
    if len(names) > MAX_SOURCE_FILES:
        raise DataError(f"{storage.uri}: {len(names):,} files, more than {MAX_SOURCE_FILES:,} in one source")
    if limits.confined and storage.is_local:
        real_root = os.path.realpath(root)
        for name in names:
            if not is_under(os.path.realpath(prefix + name), real_root):
                raise DataError(f"{storage.uri}: {name!r} leads outside the source's folder (a symlink); not read")
    return names


def read_file(storage: Storage, path: str, limits: ReadLimits = ReadLimits()) -> bytes:
    """A whole file, after checking its size against `limits.max_read_bytes`."""
    try:
        size = storage.fs.get_file_info(path).size or 0
        if size > limits.max_read_bytes:
            raise DataError(f"{path}: {size:,} bytes, more than the {limits.max_read_bytes:,} read whole at once")
        with storage.fs.open_input_stream(path) as f:
            return f.read()
    except OSError as err:
        raise unreadable(path, err) from None


class ArraySource:
    """Records already in memory: (N, C, H, W) float arrays in their final scale, labels (N,) or None."""

    format = "numpy"

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, uri: str, class_names: tuple[str, ...] = ()):
        if images.ndim != 4:
            raise DataError(f"{uri}: images must be N x C x H x W, got shape {tuple(images.shape)}")
        if not np.issubdtype(images.dtype, np.number):
            raise DataError(f"{uri}: images must be numeric, got dtype {images.dtype}")
        if len(images) > MAX_SOURCE_RECORDS:
            raise DataError(f"{uri}: {len(images):,} records; one source holds at most {MAX_SOURCE_RECORDS:,}")
        if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
            raise DataError(f"{uri}: labels must be one integer per image, got shape {tuple(labels.shape)}")
        if labels is not None and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{uri}: labels must be integers, got dtype {labels.dtype}")
        self.uri, self.images, self._labels, self.class_names = uri, images, labels, class_names
        self.labelled = labels is not None

    def shards(self) -> list[Shard]:
        return row_ranges(lambda a, b: f"{self.uri}#{a}:{b}", len(self.images), ARRAY_SHARD)

    def read(self, shard: Shard) -> Iterator[Record]:
        start = shard.key
        for row in range(start, start + shard.num_records):
            label = int(self._labels[row]) if self._labels is not None else -1
            yield self.images[row], label, f"{self.uri}#{row}"

    def labels(self) -> np.ndarray:
        if self._labels is None:
            return np.full(len(self.images), -1, dtype=np.int64)
        return np.asarray(self._labels, dtype=np.int64)


def row_ranges(name, n: int, size: int) -> list[Shard]:
    """Records 0..n-1 as shards of `size`, each keyed by its first record and named `name(start, end)`."""
    return [Shard(name(s, min(n, s + size)), min(n, s + size) - s, s) for s in range(0, n, size)]


def _pick(names: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, where: str) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{where}: no {what} named {wanted!r}; it has {names}")
        return wanted
    return next((n for n in defaults if n in names), None)


class NumpySource(ArraySource):
    """A `.npy` (images only) or `.npz` (images, and labels if present) file: N x C x H x W floats, used as they are
    (no rescaling): e.g. VAE latents. A local .npy is memory-mapped; other files are read whole."""

    def __init__(
        self,
        storage: Storage,
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        limits: ReadLimits = ReadLimits(),
    ):
        file_info(storage, storage.root)
        path = storage.root
        try:
            if storage.is_local and path.lower().endswith(".npy"):
                loaded = np.load(path, mmap_mode="r", allow_pickle=False)
            elif storage.is_local:  # an .npz: its members are measured below before one is inflated
                loaded = np.load(path, allow_pickle=False)
            else:
                loaded = np.load(io.BytesIO(read_file(storage, path, limits)), allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{storage.uri}: not a readable NumPy file ({err})") from None
        labels = None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            keys = list(loaded.files)
            image_key = _pick(keys, image_column, ("images", "x", "arr_0"), "array", storage.uri)
            if image_key is None:
                raise DataError(f"{storage.uri}: no images array; name it with data.image_column (keys: {keys})")
            label_key = _pick(keys, label_column, ("labels", "y"), "array", storage.uri)
            for key in filter(None, (image_key, label_key)):
                size = loaded.zip.getinfo(f"{key}.npy").file_size
                if size > limits.max_read_bytes:
                    raise DataError(
                        f"{storage.uri}: array {key!r} inflates to {size:,} bytes, more than the "
                        f"{limits.max_read_bytes:,} read at once (data.memory_limit_mb; store it as .npy to map it)"
                    )
            images = loaded[image_key]
            labels = loaded[label_key] if label_key else None
        else:
            if label_column is not None:
                raise DataError(f"{storage.uri}: a .npy file holds one array; labels need a .npz (data.label_column)")
            images = loaded
        super().__init__(images, labels, storage.uri)


class FolderSource:
    """PNG/JPEG files. Labels: from `metadata.csv`/`metadata.jsonl` (`file_name`, `label`) at the root if present;
    else from class sub-folders (sorted names -> 0..K-1, as torchvision's ImageFolder); a flat folder is unlabelled."""

    format = "folder"

    def __init__(self, storage: Storage, *, label_column: str | None = None, limits: ReadLimits = ReadLimits()):
        info = file_info(storage, storage.root)
        if info.type != pafs.FileType.Directory:
            raise DataError(f"{storage.uri}: an image folder must be a directory")
        self.storage, self.uri, self.limits = storage, storage.uri, limits
        names = list_files(storage, storage.root, limits)
        files = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
        if not files:
            raise DataError(f"{storage.uri}: no PNG or JPEG images in this folder")
        self.files = files
        metadata = next((n for n in ("metadata.csv", "metadata.jsonl") if n in names), None)
        if metadata is not None:
            self._labels = self._metadata_labels(metadata, label_column or "label")
            self.class_names, self.labelled = (), True
            return
        if label_column is not None:
            raise DataError(f"{storage.uri}: data.label_column needs a metadata.csv or metadata.jsonl in the folder")
        depths = {f.count("/") for f in files}
        if depths == {0}:
            self._labels, self.class_names, self.labelled = np.full(len(files), -1, dtype=np.int64), (), False
        elif depths == {1}:
            self.class_names = tuple(sorted({f.split("/", 1)[0] for f in files}))
            index = {name: i for i, name in enumerate(self.class_names)}
            self._labels = np.array([index[f.split("/", 1)[0]] for f in files], dtype=np.int64)
            self.labelled = True
        else:
            stray = next(f for f in files if f.count("/") != 1) if 1 in depths else files[0]
            raise DataError(
                f"{storage.uri}: images must all sit in class sub-folders (root/class/image.png) or all at the root "
                f"(unlabelled); found {stray!r}"
            )

    def _metadata_labels(self, name: str, column: str) -> np.ndarray:
        text = read_file(self.storage, self.storage.path(name), self.limits).decode()
        rows = list(csv.DictReader(io.StringIO(text))) if name.endswith(".csv") else []
        if name.endswith(".jsonl"):
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as err:
                raise DataError(f"{self.uri}/{name}: not JSON lines ({err})") from None
        by_file = {}
        for number, row in enumerate(rows, start=2 if name.endswith(".csv") else 1):
            if "file_name" not in row or column not in row:
                raise DataError(f"{self.uri}/{name} line {number}: needs 'file_name' and {column!r}")
            try:
                by_file[row["file_name"]] = int(row[column])
            except (TypeError, ValueError):
                raise DataError(f"{self.uri}/{name} line {number}: label {row[column]!r} is not an integer") from None
        missing = [f for f in self.files if f not in by_file]
        if missing:
            raise DataError(f"{self.uri}/{name}: no label for {missing[0]!r} ({len(missing)} images unlabelled)")
        return np.array([by_file[f] for f in self.files], dtype=np.int64)

    def shards(self) -> list[Shard]:
        return row_ranges(lambda a, b: f"{self.uri}[{a}:{b}]", len(self.files), FOLDER_SHARD)

    def read(self, shard: Shard) -> Iterator[Record]:
        for i in range(shard.key, shard.key + shard.num_records):
            # the file is read when the record is decoded: a shuffle buffer holds paths, and a resumed stream
            # skips records without opening their files
            payload = functools.partial(read_file, self.storage, self.storage.path(self.files[i]), self.limits)
            yield payload, int(self._labels[i]), f"{self.uri}/{self.files[i]}"

    def labels(self) -> np.ndarray:
        return self._labels


def check_parquet_sizes(meta: pq.FileMetaData, where: str, limits: ReadLimits, records_before: int = 0) -> None:
    """A footer's counts, checked before any row is read: rows of the source so far, and each row group's size
    (a row group's column chunks are decompressed whole)."""
    if meta.num_rows < 0 or records_before + meta.num_rows > MAX_SOURCE_RECORDS:
        raise DataError(f"{where}: {meta.num_rows:,} rows; one source holds at most {MAX_SOURCE_RECORDS:,} records")
    for index in range(meta.num_row_groups):
        size = meta.row_group(index).total_byte_size
        if size > limits.max_read_bytes:
            raise DataError(
                f"{where}: row group {index} holds {size:,} bytes, more than the {limits.max_read_bytes:,} read at "
                "once (data.memory_limit_mb; write smaller row groups)"
            )


class ParquetSource:
    """One `.parquet` file or every `.parquet` under a folder/prefix (sorted), one shard per file. The image column
    holds encoded bytes or Hugging Face's `{bytes, path}` struct; the label column, if any, integers. Read in
    batches of rows (`iter_batches`), so a shard is never held whole."""

    format = "parquet"
    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        storage: Storage,
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        limits: ReadLimits = ReadLimits(),
    ):
        info = file_info(storage, storage.root)
        self.storage, self.uri = storage, storage.uri
        if info.type == pafs.FileType.File:
            paths = [storage.root]
        else:
            paths = [
                storage.path(n) for n in list_files(storage, storage.root, limits) if n.lower().endswith(".parquet")
            ]
            if not paths:
                raise DataError(f"{storage.uri}: no .parquet files under this folder")
        self._shards = []
        self.image_column = self.label_column = None
        for path in paths:
            where = self._where(path)
            try:
                meta = pq.ParquetFile(self.storage.fs.open_input_file(path))
                schema, rows = meta.schema_arrow, meta.metadata.num_rows
            except (OSError, pa.ArrowException) as err:
                raise DataError(f"{where}: not a readable Parquet file ({err})") from None
            check_parquet_sizes(meta.metadata, where, limits, sum(s.num_records for s in self._shards))
            image, label = self._columns(schema, image_column, label_column, where)
            if self.image_column is None:
                self.image_column, self.label_column = image, label
            elif (image, label) != (self.image_column, self.label_column):
                raise DataError(f"{where}: columns differ from the first shard's ({self.image_column}, {label})")
            self._shards.append(Shard(where, rows, path))
        self.labelled = self.label_column is not None

    def _where(self, path: str) -> str:
        return f"s3://{path}" if not self.storage.is_local else path

    @staticmethod
    def _columns(schema: pa.Schema, image_column, label_column, where) -> tuple[str, str | None]:
        names = schema.names
        image = _pick(names, image_column, ("image", "img", "png", "jpg"), "column", where)
        if image is None:
            raise DataError(f"{where}: no image column; name it with data.image_column (columns: {names})")
        kind = schema.field(image).type
        ok = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        ok = ok or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)
        if not ok:
            raise DataError(f"{where}: column {image!r} is {kind}; expected image bytes or a {{bytes, path}} struct")
        label = _pick(names, label_column, ("label", "labels"), "column", where)
        if label is not None and not pa.types.is_integer(schema.field(label).type):
            raise DataError(f"{where}: label column {label!r} is {schema.field(label).type}; expected integers")
        return image, label

    def shards(self) -> list[Shard]:
        return list(self._shards)

    def _batches(self, shard: Shard, columns: list[str]):
        try:
            parquet = pq.ParquetFile(self.storage.fs.open_input_file(shard.key))
            yield from parquet.iter_batches(batch_size=256, columns=columns)
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{shard.name}: cannot be read ({err})") from None

    def read(self, shard: Shard) -> Iterator[Record]:
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        row = 0
        for batch in self._batches(shard, columns):
            images = batch.column(0)
            if pa.types.is_struct(images.type):
                images = images.field("bytes")
            labels = nulls = None
            if self.label_column:
                labels = batch.column(1).fill_null(-1).to_numpy(zero_copy_only=False)
                nulls = batch.column(1).is_null().to_numpy(zero_copy_only=False)
            for i, payload in enumerate(images.to_pylist()):
                if nulls is not None and nulls[i]:
                    raise DataError(f"{shard.name}#{row}: label column {self.label_column!r} is null")
                yield payload, int(labels[i]) if labels is not None else -1, f"{shard.name}#{row}"
                row += 1

    def labels(self) -> np.ndarray:
        if not self.label_column:
            return np.full(sum(s.num_records for s in self._shards), -1, dtype=np.int64)
        parts = []
        for shard in self._shards:
            for batch in self._batches(shard, [self.label_column]):
                column = batch.column(0)
                if column.null_count:
                    raise DataError(f"{shard.name}: label column {self.label_column!r} has null values")
                parts.append(column.to_numpy(zero_copy_only=False).astype(np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
