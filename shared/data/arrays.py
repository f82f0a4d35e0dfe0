"""Arrays as a source: in memory (the built-in datasets) or a NumPy file (`.npy`, memory-mapped when local; `.npz`,
each member measured before it is inflated), used as they are: e.g. VAE latents."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import numpy as np

from shared.data.errors import DataError
from shared.data.files import ReadLimits, file_info, read_file
from shared.data.shards import MAX_SOURCE_RECORDS, Record, Shard, pick, row_ranges
from shared.storage import Storage

ARRAY_SHARD = 4096  # rows per shard of an array


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
            image_key = pick(keys, image_column, ("images", "x", "arr_0"), "array", storage.uri)
            if image_key is None:
                raise DataError(f"{storage.uri}: no images array; name it with data.image_column (keys: {keys})")
            label_key = pick(keys, label_column, ("labels", "y"), "array", storage.uri)
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
