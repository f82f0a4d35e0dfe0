"""The `autoregressive` section of a run config: the corpus, its tokens, sequences, generation and evaluation of an
autoregressive language model trained block-wise (next-token denoising)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.config_base import MAX_SAMPLE_STEPS, MAX_SEED, Section

MAX_TOKENIZER_CHARS = 4 * 2**20  # a trained BPE's JSON (vocabulary and merges)


class AutoregressiveConfig(Section):
    """Autoregressive language modelling by next-token denoising (`task: autoregressive`): the corpus, its tokens,
    sequences, generation and evaluation."""

    corpus: Literal["python_docs"] = Field(
        "python_docs",
        description="Built-in corpus, used when no source is given: python_docs = the documentation text every "
        "CPython ships (pydoc_data, ~465,000 characters; PSF licence).",
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
    memory_limit_mb: int = Field(
        1024, ge=1, le=65_536, description="Largest corpus (in characters, MiB) read into memory."
    )
    tokenizer: Literal["bpe", "bytes"] = Field(
        "bpe",
        description="bpe = a byte-level BPE of autoregressive.vocab_size tokens trained on the run's training split "
        "when the run is resolved (the `tokenizers` library; seconds, no download); bytes = the 256 byte values.",
    )
    vocab_size: int = Field(512, ge=260, le=32_768, description="Tokens of the trained BPE (bpe only).")
    tokenizer_json: str | None = Field(
        None,
        min_length=2,
        max_length=MAX_TOKENIZER_CHARS,
        description="The trained BPE (its JSON); filled in when the run is resolved, stored with every block.",
    )
    seq_len: int = Field(64, ge=8, le=8192, description="Tokens per training sequence (the context).")
    validation_fraction: float = Field(
        0.05, gt=0, lt=0.5, description="Share of the corpus held out for validation (a contiguous chunk)."
    )
    test_fraction: float = Field(
        0.05, gt=0, lt=0.5, description="Share of the corpus held out for test (the last contiguous chunk)."
    )
    objective: Literal["denoising", "backprop"] = Field(
        "denoising",
        description="denoising = the DiffusionBlocks task (the next token's embedding denoised from noise, given the "
        "clean past); backprop = the same backbone as an ordinary next-token LM trained end to end by "
        "cross-entropy (the paper's AR baseline; needs train.mode end_to_end).",
    )
    sample_steps: int = Field(
        16, ge=1, le=MAX_SAMPLE_STEPS, description="Euler steps per generated token (denoising; the paper: 50)."
    )
    temperature: float = Field(
        1.0, ge=0, le=10, description="Sampling temperature of each generated token; 0 = the most likely token."
    )
    eval_prompts: int = Field(
        256, ge=8, le=10_000, description="Held-out prompts the evaluation continues (MAUVE, generative perplexity)."
    )
    eval_prompt_tokens: int = Field(16, ge=1, le=4096, description="Tokens per evaluation prompt.")
    eval_continuation_tokens: int = Field(16, ge=1, le=4096, description="Tokens generated per evaluation prompt.")
    mauve_scaling: float = Field(5.0, gt=0, le=100, description="MAUVE's scaling factor (the paper's LM1B: 0.2).")
    reference_layers: int = Field(
        8, ge=1, le=96, description="Layers of the reference next-token model that scores generations."
    )
    reference_width: int = Field(128, ge=16, le=4096, description="Width of the reference model (heads: width/32).")
    reference_steps: int = Field(3000, ge=1, le=1_000_000, description="Training steps of the reference model.")
    reference_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the reference model's training.")

    @model_validator(mode="after")
    def _fits(self) -> AutoregressiveConfig:
        if self.eval_prompt_tokens + self.eval_continuation_tokens > self.seq_len:
            raise ValueError(
                f"eval_prompt_tokens {self.eval_prompt_tokens} + eval_continuation_tokens "
                f"{self.eval_continuation_tokens} must fit autoregressive.seq_len {self.seq_len}"
            )
        if self.reference_width % 32:
            raise ValueError(f"reference_width {self.reference_width} must be a multiple of 32 (heads of width 32)")
        return self
