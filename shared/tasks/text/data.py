"""Text for the masked-diffusion language task: a corpus read whole (a built-in one, a .txt file or a folder of
them, a .parquet file or folder of shards with a text column; local or S3, through the same storage layer as
images), normalised to a character vocabulary, encoded as symbol ids, and cut into contiguous train / validation /
test chunks. Training windows are drawn at random offsets of the train chunk. docs/data.md, "Text".

Vocabularies: `text8` (27 symbols: space and a-z; lowercase, every other character becomes a space, runs of
spaces collapse, as text8 was made) or `chars` (every distinct character of the corpus, at most 255). The
vocabulary is part of the plan: it is stored in every block file and in the manifest.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from shared.data.errors import DataError
from shared.data.files import ReadLimits, file_info, list_files, read_file
from shared.data.parquet import check_parquet_sizes
from shared.storage import Storage, StorageError

TEXT8 = " abcdefghijklmnopqrstuvwxyz"
MAX_SYMBOLS = 255  # the mask id is the vocabulary size, so ids fit one byte
SPLITS = ("train", "validation", "test")


def python_docs() -> str:
    """Python's own documentation text (the `pydoc_data` topics every CPython ships; PSF licence): about 465,000
    characters of English prose with code, on every machine that runs this project."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


CORPORA = {"python_docs": python_docs}


def normalize_text8(text: str) -> str:
    """text8's rule: lowercase; accents stripped; every character outside a-z becomes a space; runs collapse."""
    text = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]+", " ", text).strip()


def vocabulary_of(text: str, kind: str) -> str:
    """The symbols of a vocabulary kind for this (normalised) text, in id order."""
    if kind == "text8":
        return TEXT8
    symbols = "".join(sorted(set(text)))
    if len(symbols) > MAX_SYMBOLS:
        raise DataError(
            f"text.vocabulary chars: the corpus has {len(symbols)} distinct characters, at most "
            f"{MAX_SYMBOLS} fit (use text8)"
        )
    return symbols


def normalize(text: str, kind: str) -> str:
    return normalize_text8(text) if kind == "text8" else text


def encode(text: str, vocabulary: str) -> np.ndarray:
    """Symbol ids (uint8) of `text`; DataError names the first character outside the vocabulary."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    symbols = np.array([ord(c) for c in vocabulary], dtype=np.uint32)
    order = np.argsort(symbols)
    at = np.minimum(np.searchsorted(symbols[order], codes), len(symbols) - 1)
    bad = np.flatnonzero(symbols[order][at] != codes)
    if len(bad):
        raise DataError(f"character {text[bad[0]]!r} at offset {int(bad[0])} is not in the run's vocabulary")
    return order[at].astype(np.uint8)


def decode(ids, vocabulary: str) -> str:
    return "".join(vocabulary[int(i)] if int(i) < len(vocabulary) else "_" for i in ids)


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
        raise DataError(f"{where}: no column {column!r} (text.text_column); columns: {table.column_names}")
    values = table.column(column)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise DataError(f"{where}: column {column!r} holds {values.type}, not strings")
    return "\n".join(v for v in values.to_pylist() if v)


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus and its three contiguous chunks (train first, then validation, then test)."""

    ids: np.ndarray  # uint8 symbol ids
    vocabulary: str
    bounds: tuple[int, int, int, int]  # offsets: train start, validation start, test start, end
    source: str

    def split(self, name: str) -> np.ndarray:
        index = SPLITS.index(name)
        return self.ids[self.bounds[index] : self.bounds[index + 1]]


def load_corpus(text_cfg, *, confined: bool = False) -> Corpus:
    """The configured corpus, normalised, encoded and split; DataError names what is wrong (empty, binary, too
    short for one sequence per split, a character outside a given vocabulary). The source's size is measured
    against `text.memory_limit_mb` before it is read."""
    limit = text_cfg.memory_limit_mb * 2**20
    if text_cfg.source is None:
        raw, source = CORPORA[text_cfg.corpus](), f"builtin:{text_cfg.corpus}"
    else:
        options = {"format": text_cfg.format, "column": text_cfg.text_column}
        limits = ReadLimits(confined=confined, max_read_bytes=limit)
        raw, source = read_text_source(text_cfg.source, **options, limits=limits)
    if len(raw) > limit:
        raise DataError(f"{source}: {len(raw):,} characters exceed text.memory_limit_mb ({text_cfg.memory_limit_mb})")
    text = normalize(raw, text_cfg.vocabulary)
    if not text.strip():
        where = "text.source" if text_cfg.source else "text.corpus"
        raise DataError(f"{where} {source}: no text left after normalisation (vocabulary {text_cfg.vocabulary})")
    vocabulary = text_cfg.symbols or vocabulary_of(text, text_cfg.vocabulary)
    ids = encode(text, vocabulary)
    n = len(ids)
    test = int(n * text_cfg.test_fraction)
    validation = int(n * text_cfg.validation_fraction)
    bounds = (0, n - test - validation, n - test, n)
    for name, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
        if hi - lo < text_cfg.seq_len:
            raise DataError(
                f"{source}: the {name} chunk holds {hi - lo:,} characters, fewer than one sequence of "
                f"text.seq_len {text_cfg.seq_len} ({n:,} characters in all)"
            )
    return Corpus(ids=ids, vocabulary=vocabulary, bounds=bounds, source=source)


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


def resolve_text(config, *, confined: bool = False):
    """The config with its text facts filled in (the source's absolute URI; the chars vocabulary's symbols),
    after reading and checking the corpus; DataError names what is wrong."""
    corpus = load_corpus(config.text, confined=confined)
    values = {}
    if config.text.source is not None:
        values["text.source"] = corpus.source
    if config.text.vocabulary == "chars" and config.text.symbols is None:
        values["text.symbols"] = corpus.vocabulary
    return config.with_values(values) if values else config
