"""A latent cache as a source: the folder `dblocks data encode` writes (`shared/latent/encode.py`), local or S3,
recognised by its `latents.json`. Records are the stored latents, used as they are (like NumPy arrays); the
manifest names the VAE that encoded them, which the run must decode its samples with (`resolve_vae`)."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator

import numpy as np

from shared.data.errors import DataError
from shared.data.files import ReadLimits, read_file
from shared.data.paths import is_under
from shared.data.shards import MAX_SOURCE_RECORDS, Record, Shard
from shared.storage import Storage

MANIFEST = "latents.json"
FORMAT, VERSION = "dblocks-latents", 1
PART = re.compile(r"part-\d{5}-\d{4}\.npz")
MAX_MANIFEST_BYTES = 64 << 20


class LatentSource:
    format = "latents"

    def __init__(self, storage: Storage, *, limits: ReadLimits = ReadLimits()):
        self.storage, self.uri, self.limits = storage, storage.uri, limits
        where = f"{storage.uri}/{MANIFEST}"
        text = read_file(storage, storage.path(MANIFEST), ReadLimits(limits.confined, MAX_MANIFEST_BYTES))
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise DataError(f"{where}: not a latent cache of format {FORMAT} version {VERSION}")
        parts = manifest.get("parts")
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and PART.fullmatch(str(p.get("file"))) and isinstance(p.get("records"), int)
            for p in parts
        ):
            raise DataError(f"{where}: 'parts' must list {{file: part-SSSSS-CCCC.npz, records: N}}")
        total = sum(p["records"] for p in parts)
        if total > MAX_SOURCE_RECORDS or total != manifest.get("num_records"):
            raise DataError(f"{where}: {total:,} records in its parts, num_records says {manifest.get('num_records')}")
        self.manifest, self.parts = manifest, parts
        self.vae = manifest.get("vae") or {}
        self.group = int(manifest.get("group", 1))  # records kept together by the split (an image and its mirror)
        self.labelled = bool(manifest.get("labelled"))
        self.class_names = tuple(manifest.get("class_names") or ())
        self._labels: np.ndarray | None = None

    def shards(self) -> list[Shard]:
        return [Shard(f"{self.uri}/{p['file']}", p["records"], p["file"]) for p in self.parts]

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        where = f"{self.uri}/{name}"
        try:
            with np.load(io.BytesIO(read_file(self.storage, self.storage.path(name), self.limits))) as part:
                images, labels = part["images"], part["labels"]
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(f"{where}: not a readable latent part ({err})") from None
        return images, labels

    def read(self, shard: Shard) -> Iterator[Record]:
        images, labels = self._load(shard.key)
        if len(images) != shard.num_records or len(labels) != shard.num_records or images.ndim != 4:
            raise DataError(f"{shard.name}: holds {len(images)} latents, the manifest says {shard.num_records}")
        for row in range(shard.num_records):
            yield images[row], int(labels[row]), f"{shard.name}#{row}"

    def _part_labels(self, name: str) -> np.ndarray:
        path = self.storage.path(name)
        if not self.storage.is_local:
            return self._load(name)[1]
        if self.limits.confined and not is_under(os.path.realpath(path), os.path.realpath(self.storage.root)):
            raise DataError(f"{self.uri}: {name!r} leads outside the cache's folder (a symlink); not read")
        try:
            with np.load(path, allow_pickle=False) as part:  # a local part: only its labels member is read
                return part["labels"]
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(f"{self.uri}/{name}: not a readable latent part ({err})") from None

    def labels(self) -> np.ndarray:
        """Every record's label, from each part's `labels` (read once; -1 when unlabelled)."""
        if self._labels is None:
            arrays = [self._part_labels(p["file"]) for p in self.parts]
            self._labels = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)
        return self._labels
