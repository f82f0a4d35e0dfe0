"""The autoregressive task's tokens and corpus: bytes (256 ids, any text) or a byte-level BPE trained on the run's
training split when the run is resolved (the `tokenizers` library: seconds, nothing downloaded). The trained BPE is
the run's `autoregressive.tokenizer_json`: stored in the run config, in every block file and in the manifest, so a
block decodes as it trained. The corpus (`shared.data.corpus`) is cut into contiguous train / validation / test
chunks by characters first (so the BPE never sees held-out text), then each chunk is tokenized."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.data.corpus import SPLITS, read_corpus
from shared.data.errors import DataError

BPE_TRAIN_CHUNK = 4096  # characters per piece the BPE trainer reads (it counts pairs within pieces)


class Tokens:
    """Encode and decode under one tokenizer: `bytes`, or `bpe` with its trained JSON."""

    def __init__(self, kind: str, tokenizer_json: str | None = None):
        self.kind = kind
        self._bpe = None
        if kind == "bpe":
            if not tokenizer_json:
                raise ValueError("autoregressive.tokenizer bpe: tokenizer_json is not trained yet (resolve the run)")
            from tokenizers import Tokenizer

            self._bpe = Tokenizer.from_str(tokenizer_json)
        elif kind != "bytes":
            raise ValueError(f"autoregressive.tokenizer must be bpe or bytes, got {kind!r}")

    @property
    def vocab_size(self) -> int:
        return 256 if self._bpe is None else self._bpe.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        if self._bpe is None:
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
        return np.asarray(self._bpe.encode(text).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._bpe is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self._bpe.decode(ids)


def train_bpe(text: str, vocab_size: int) -> str:
    """A byte-level BPE of `vocab_size` tokens trained on `text` (its JSON). Deterministic for a given text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    pieces = (text[i : i + BPE_TRAIN_CHUNK] for i in range(0, len(text), BPE_TRAIN_CHUNK))
    tokenizer.train_from_iterator(pieces, trainer)
    return tokenizer.to_str()


def split_text(text: str, validation_fraction: float, test_fraction: float) -> dict[str, str]:
    """The corpus's contiguous train / validation / test chunks, by characters (train first)."""
    n = len(text)
    test, validation = int(n * test_fraction), int(n * validation_fraction)
    bounds = (0, n - test - validation, n - test, n)
    return {name: text[lo:hi] for name, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:])}


@dataclass(frozen=True)
class TokenCorpus:
    """A tokenized corpus: each chunk's ids, the tokenizer, and where the text came from."""

    splits: dict[str, np.ndarray]
    tokens: Tokens
    source: str

    def split(self, name: str) -> np.ndarray:
        return self.splits[name]


def load_token_corpus(section, *, confined: bool = False) -> TokenCorpus:
    """The configured corpus read, split and tokenized; DataError names what is wrong (no text, a chunk shorter
    than one sequence). A `bpe` section must already hold its trained tokenizer (`resolve_tokens`)."""
    raw, source = read_corpus(section, confined=confined, field="autoregressive")
    if not raw.strip():
        where = "autoregressive.source" if section.source else "autoregressive.corpus"
        raise DataError(f"{where} {source}: holds no text")
    chunks = split_text(raw, section.validation_fraction, section.test_fraction)
    tokens = Tokens(section.tokenizer, section.tokenizer_json)
    splits = {name: tokens.encode(chunk) for name, chunk in chunks.items()}
    for name, ids in splits.items():
        if len(ids) < section.seq_len + 1:
            raise DataError(
                f"{source}: the {name} chunk holds {len(ids):,} tokens, fewer than one sequence of "
                f"autoregressive.seq_len {section.seq_len} (+1)"
            )
    return TokenCorpus(splits=splits, tokens=tokens, source=source)


def resolve_tokens(config, *, confined: bool = False):
    """The config with its token facts filled in (the source's absolute URI; the BPE trained on the training
    chunk), after reading and checking the corpus; DataError names what is wrong."""
    section = config.autoregressive
    values = {}
    if section.tokenizer == "bpe" and section.tokenizer_json is None:
        raw, source = read_corpus(section, confined=confined, field="autoregressive")
        train = split_text(raw, section.validation_fraction, section.test_fraction)["train"]
        if not train.strip():
            raise DataError(f"autoregressive: {source}'s training chunk holds no text to train the BPE on")
        values["autoregressive.tokenizer_json"] = train_bpe(train, section.vocab_size)
        config = config.with_values(values)
    corpus = load_token_corpus(config.autoregressive, confined=confined)
    if section.source is not None and corpus.source != section.source:
        config = config.with_values({"autoregressive.source": corpus.source})
    return config
