"""Text corpora for the token tasks (masked-diffusion text, the autoregressive LM): a built-in corpus or the user's
text read whole (a .txt file or a folder of them, a .parquet file or folder of shards with a string column; local
or S3, through the same storage layer as images, sizes measured before anything is read), cut into contiguous
train / validation / test chunks, and training windows at random offsets of the train chunk. Each task turns the
text into its own ids (characters, bytes, subwords): that part lives in its folder. docs/data.md, "Text".
"""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from shared.data.errors import DataError
from shared.data.files import ReadLimits, file_info, list_files, read_file
from shared.data.parquet import check_parquet_sizes
from shared.storage import Storage, StorageError

SPLITS = ("train", "validation", "test")


def python_docs() -> str:
    """Python's own documentation text (the `pydoc_data` topics every CPython ships; PSF licence): about 465,000
    characters of English prose with code, on every machine that runs this project."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


CORPORA = {"python_docs": python_docs}


def _decode_utf8(data: bytes, where: str) -> str:
    if b"\x00" in data[: 1 << 20]:
        raise DataError(f"{where}: binary data (NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def read_text_source(
    uri: str, *, format: str = "auto", column: str | None = None, limits: ReadLimits = ReadLimits()
) -> tuple[str, str]:
    """(the raw text, the source's absolute URI) of a .txt file, a folder of .txt files (sorted by path, joined by
    newlines), or Parquet (one file or a folder of shards) with a string column (default `text`). Sizes are measured
    before anything is read: the files (or the Parquet row groups) hold at most `limits.max_read_bytes` in all."""
    try:
        storage = Storage.from_uri(uri)
    except StorageError as err:
        raise DataError(str(err)) from None
    info = file_info(storage, storage.root)
    if info.type == pafs.FileType.File:
        paths = [storage.root]
    else:
        names = list_files(storage, storage.root, limits)
        parquet_named = any(n.lower().endswith(".parquet") for n in names)
        wanted = ".parquet" if format == "parquet" or (format == "auto" and parquet_named) else ".txt"
        paths = [f"{storage.root}/{n}" for n in names if n.lower().endswith(wanted) and not n.startswith(".")]
        if not paths:
            raise DataError(f"{storage.uri}: holds no .txt or .parquet files")
    parquet = format == "parquet" or (format == "auto" and paths[0].lower().endswith(".parquet"))
    budget = ReadLimits(confined=limits.confined, max_read_bytes=limits.max_read_bytes)
    parts = []
    for path in paths:
        data = read_file(storage, path, budget)
        parts.append(_parquet_text(data, path, column or "text", budget) if parquet else _decode_utf8(data, path))
        budget = ReadLimits(confined=limits.confined, max_read_bytes=budget.max_read_bytes - len(data))
    return "\n".join(parts), storage.uri


def _parquet_text(data: bytes, where: str, column: str, limits: ReadLimits) -> str:
    import pyarrow as pa

    try:
        check_parquet_sizes(pq.ParquetFile(pa.BufferReader(data)).metadata, where, limits)
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{where}: not a readable Parquet file ({err})") from None
    if column not in table.column_names:
        raise DataError(f"{where}: no column {column!r} (text_column); columns: {table.column_names}")
    values = table.column(column)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise DataError(f"{where}: column {column!r} holds {values.type}, not strings")
    return "\n".join(v for v in values.to_pylist() if v)


def sequences(ids: np.ndarray, seq_len: int) -> torch.Tensor:
    """Non-overlapping sequences (N, seq_len) of a chunk, int64 (the tail shorter than one sequence is dropped)."""
    count = len(ids) // seq_len
    return torch.from_numpy(ids[: count * seq_len].astype(np.int64)).view(count, seq_len)


class TokenBatches:
    """Training windows of `seq_len` symbols at uniformly random offsets of the train chunk. All randomness comes
    from the worker's generator (saved with every checkpoint), so a resumed block draws the same windows."""

    skipped = 0

    def __init__(self, ids: np.ndarray, seq_len: int, device: torch.device | str = "cpu"):
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.seq_len = seq_len
        self.device = torch.device(device)
        self._offsets = torch.arange(seq_len, device="cpu")

    def to(self, device) -> TokenBatches:
        self.device = torch.device(device)
        return self

    def next_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        starts = torch.randint(
            0, len(self.ids) - self.seq_len + 1, (batch_size,), generator=generator, device=generator.device
        ).cpu()
        return self.ids[starts[:, None] + self._offsets].to(self.device), None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict | None) -> None:
        pass


def read_corpus(section, *, confined: bool = False, field: str = "text") -> tuple[str, str]:
    """(raw text, source) of a token task's config section (`corpus`, `source`, `format`, `text_column`,
    `memory_limit_mb`): the built-in corpus, or the source measured against the memory limit before it is read.
    `field` names the section in errors."""
    limit = section.memory_limit_mb * 2**20
    if section.source is None:
        raw, source = CORPORA[section.corpus](), f"builtin:{section.corpus}"
    else:
        limits = ReadLimits(confined=confined, max_read_bytes=limit)
        raw, source = read_text_source(section.source, format=section.format, column=section.text_column, limits=limits)
    if len(raw) > limit:
        raise DataError(f"{source}: {len(raw):,} characters exceed {field}.memory_limit_mb ({section.memory_limit_mb})")
    return raw, source


def split_bounds(
    n: int, validation_fraction: float, test_fraction: float, seq_len: int, *, source: str, unit: str, field: str
) -> tuple[int, int, int, int]:
    """Offsets (train start, validation start, test start, end) of `n` ids cut into contiguous chunks, train
    first; DataError when a chunk holds less than one sequence of `seq_len` (`unit`: what an id is, `field`: the
    config section, for the message)."""
    test = int(n * test_fraction)
    validation = int(n * validation_fraction)
    bounds = (0, n - test - validation, n - test, n)
    for name, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
        if hi - lo < seq_len:
            raise DataError(
                f"{source}: the {name} chunk holds {hi - lo:,} {unit}, fewer than one sequence of "
                f"{field}.seq_len {seq_len} ({n:,} {unit} in all)"
            )
    return bounds
