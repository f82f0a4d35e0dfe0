"""A folder of PNG/JPEG files as a source, labelled by a metadata file or class sub-folders; each file is read only
when its record is decoded."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator

import numpy as np
import pyarrow.fs as pafs

from shared.data.errors import DataError
from shared.data.files import ReadLimits, file_info, list_files, read_file
from shared.data.shards import Record, Shard, row_ranges
from shared.storage import Storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_SHARD = 1024  # files per shard of an image folder


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
