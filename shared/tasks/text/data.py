"""Text for the masked-diffusion language task: a corpus (`shared.data.corpus`: built-in or the user's, read whole)
normalised to a character vocabulary, encoded as symbol ids, and cut into contiguous train / validation / test
chunks. Training windows are drawn at random offsets of the train chunk. docs/data.md, "Text".

Vocabularies: `text8` (27 symbols: space and a-z; lowercase, every other character becomes a space, runs of
spaces collapse, as text8 was made) or `chars` (every distinct character of the corpus, at most 255). The
vocabulary is part of the plan: it is stored in every block file and in the manifest.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from shared.data.corpus import CORPORA, SPLITS, TokenBatches, read_corpus, read_text_source, sequences, split_bounds
from shared.data.errors import DataError

__all__ = ["CORPORA", "TEXT8", "Corpus", "TokenBatches", "decode", "encode", "load_corpus", "read_text_source"]
__all__ += ["normalize_text8", "resolve_text", "sequences"]

TEXT8 = " abcdefghijklmnopqrstuvwxyz"
MAX_SYMBOLS = 255  # the mask id is the vocabulary size, so ids fit one byte


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
    raw, source = read_corpus(text_cfg, confined=confined)
    text = normalize(raw, text_cfg.vocabulary)
    if not text.strip():
        where = "text.source" if text_cfg.source else "text.corpus"
        raise DataError(f"{where} {source}: no text left after normalisation (vocabulary {text_cfg.vocabulary})")
    vocabulary = text_cfg.symbols or vocabulary_of(text, text_cfg.vocabulary)
    ids = encode(text, vocabulary)
    bounds = split_bounds(
        len(ids),
        text_cfg.validation_fraction,
        text_cfg.test_fraction,
        text_cfg.seq_len,
        source=source,
        unit="characters",
        field="text",
    )
    return Corpus(ids=ids, vocabulary=vocabulary, bounds=bounds, source=source)


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
