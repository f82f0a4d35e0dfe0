"""Parquet as a source: one `.parquet` file or every one under a folder or prefix, each footer checked before any row
is read, images and labels read in batches of rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shared.data.errors import DataError
from shared.data.files import ReadLimits, file_info, list_files
from shared.data.shards import MAX_SOURCE_RECORDS, Record, Shard, pick
from shared.storage import Storage


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
        image = pick(names, image_column, ("image", "img", "png", "jpg"), "column", where)
        if image is None:
            raise DataError(f"{where}: no image column; name it with data.image_column (columns: {names})")
        kind = schema.field(image).type
        ok = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        ok = ok or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)
        if not ok:
            raise DataError(f"{where}: column {image!r} is {kind}; expected image bytes or a {{bytes, path}} struct")
        label = pick(names, label_column, ("label", "labels"), "column", where)
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
