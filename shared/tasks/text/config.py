"""The `text` section of a run config: the corpus, its vocabulary, sequences and evaluation of a text run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.config_base import MAX_EVAL_SYMBOLS, MAX_SAMPLE_STEPS, Section


class TextConfig(Section):
    """Masked-diffusion language modelling (`task: text`): the corpus, its vocabulary, sequences, evaluation."""

    corpus: Literal["python_docs"] = Field(
        "python_docs",
        description="Built-in corpus, used when no source is given: python_docs = the documentation text every "
        "CPython ships (pydoc_data, ~375,000 characters as text8; PSF licence).",
    )
    source: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Your text: a .txt file, a folder of .txt files, or Parquet (file or folder) with a text "
        "column; a local path or s3://bucket/prefix. Unset: the built-in corpus.",
    )
    format: Literal["auto", "text", "parquet"] = Field("auto", description="Format of the source; auto: by name.")
    text_column: str | None = Field(
        None, min_length=1, max_length=256, description="Parquet column of the text (default: text)."
    )
    vocabulary: Literal["text8", "chars"] = Field(
        "text8",
        description="text8 = space and a-z (lowercased, other characters become spaces); chars = every distinct "
        "character of the corpus (at most 255).",
    )
    symbols: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="The chars vocabulary in id order; filled in from the corpus when the run is resolved.",
    )
    seq_len: int = Field(256, ge=8, le=8192, description="Symbols per training sequence (and per sample).")
    validation_fraction: float = Field(
        0.05, gt=0, lt=0.5, description="Share of the corpus held out for validation (a contiguous chunk)."
    )
    test_fraction: float = Field(
        0.05, gt=0, lt=0.5, description="Share of the corpus held out for test (the last contiguous chunk)."
    )
    memory_limit_mb: int = Field(
        1024, ge=1, le=65_536, description="Largest corpus (in characters, MiB) read into memory."
    )
    eval_stderr: float = Field(
        0.01, gt=0, le=1, description="Monte-Carlo BPC estimate: sample until its standard error is at most this."
    )
    eval_max_samples: int = Field(
        200_000, ge=100, le=10_000_000, description="Monte-Carlo BPC estimate: at most this many (sequence, t) draws."
    )
    sample_steps: int = Field(256, ge=1, le=MAX_SAMPLE_STEPS, description="Unmasking steps when sampling text.")
    train_weighting: Literal["elbo", "masked_mean"] = Field(
        "elbo",
        description="Training loss per sequence: elbo = (1/t) x the masked cross-entropy per symbol, the ELBO's own "
        "estimate (unbiased; on short sequences its variance grows without bound as t -> 0, where one or two masked "
        "symbols carry weight 1/t); masked_mean = the cross-entropy averaged over the sequence's masked symbols "
        "(the same integrand at each t up to the spread of the mask count, far lower variance at small t). "
        "Evaluation is always the ELBO.",
    )

    @model_validator(mode="after")
    def _symbols(self) -> TextConfig:
        if self.symbols is not None and len(set(self.symbols)) != len(self.symbols):
            raise ValueError("text.symbols: each symbol must appear once")
        if self.eval_max_samples * self.seq_len > MAX_EVAL_SYMBOLS:
            raise ValueError(
                f"text.eval_max_samples {self.eval_max_samples} x text.seq_len {self.seq_len} is more than "
                f"{MAX_EVAL_SYMBOLS:,} symbols to evaluate"
            )
        return self
