"""The `data` section of a run config: a built-in dataset or your source, its format, split, shape and loader
(docs/data.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.config_base import MAX_SEED, Section
from shared.data.builtin import DATASETS

MAX_PATH_CHARS = 4096  # a local path or an s3:// URI


def path_field(description: str):
    """An optional path or s3:// URI field of the data section."""
    return Field(None, min_length=1, max_length=MAX_PATH_CHARS, description=description)


class DataConfig(Section):
    dataset: str = Field(
        "mnist",
        description=f"Built-in dataset, used when no source is given; one of {sorted(DATASETS)}.",
        json_schema_extra={"enum": sorted(DATASETS)},  # the schema says it; the validator names a wrong one
    )
    source: str | None = path_field(
        "Your data: an image folder, a .parquet file or folder of shards, a .npy/.npz file; a local "
        "path or s3://bucket/prefix. Unset: the built-in dataset."
    )
    format: Literal["auto", "folder", "parquet", "numpy", "latents"] = Field(
        "auto", description="Format of the source; auto infers it from the path (latents: a folder with latents.json)."
    )
    test_source: str | None = path_field("Held-out split from its own source (same format).")
    test_fraction: float = Field(
        0.05, gt=0, lt=1, description="Without test_source: share of the source held out (by a hash of the index)."
    )
    num_test: int = Field(1000, ge=1, le=1_000_000, description="Built-in dataset: images held out as the test split.")
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the fixed train/test split.")
    image_column: str | None = Field(
        None, min_length=1, max_length=256, description="Parquet column or .npz key of the images (default: image)."
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Parquet column, .npz key or metadata.csv column of integer labels (default: label if present).",
    )
    vae: str | None = path_field(
        "The VAE (a diffusers AutoencoderKL folder) that encoded a latent source: samples, previews and "
        "evaluation decode with it. Unset for a latent cache: the VAE its manifest names (local runs only)."
    )
    vae_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of data.vae's files, filled in from the latent cache's manifest; a VAE that differs is "
        "refused.",
    )
    flip: bool = Field(
        False,
        description="With data.vae and a source of images (the service encodes it): also encode each image's mirror "
        "as its own record.",
    )
    encoded_from: str | None = path_field(
        "Filled in at resolve when the service encodes a source of images with data.vae: those images "
        "(data.source is then their latent cache, built once by the first job that needs it)."
    )
    encoded_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="Filled in with data.encoded_from: the side in pixels the images are encoded at.",
    )
    channels: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Images: 1 (grayscale) or 3 (RGB), converted; arrays and latents: their channels, checked; "
        "unset: the data's own.",
    )
    image_size: int | None = Field(
        None, ge=2, le=4096, description="Side of the square images the model sees; unset: the data's own."
    )
    resize: Literal["none", "resize", "center_crop"] = Field(
        "none", description="none: every image must already be image_size square; resize: squash; center_crop."
    )
    num_classes: int | None = Field(
        None, ge=0, le=100_000, description="Classes; unset: max label + 1, or 0 (unconditional) when unlabelled."
    )
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: the split as one tensor; stream: shards through a shuffle buffer; auto: by size."
    )
    memory_limit_mb: int = Field(
        1024, ge=1, le=1_000_000, description="auto loader: stream when the decoded train split is larger."
    )
    shuffle_buffer: int = Field(4096, ge=1, le=1_000_000, description="Records in the streaming shuffle buffer.")
    skip_corrupt: bool = Field(
        False, description="Streaming: skip (and count) a corrupt record met mid-training instead of failing."
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"dataset {name!r} does not exist; available: {sorted(DATASETS)}")
        return name

    @model_validator(mode="after")
    def _source_options(self) -> DataConfig:
        if self.source is None:
            given = [
                f
                for f in (
                    "test_source",
                    "channels",
                    "image_size",
                    "image_column",
                    "label_column",
                    "vae",
                    "encoded_from",
                )
                if getattr(self, f) is not None
            ]
            if given:
                raise ValueError(f"data.{given[0]} applies to data.source; the built-in {self.dataset} has its own")
        if (self.encoded_from is not None or self.flip) and self.vae is None:
            raise ValueError("data.flip and data.encoded_from apply to a source of images encoded with data.vae")
        if (self.encoded_from is None) != (self.encoded_size is None):
            raise ValueError("data.encoded_from and data.encoded_size are filled in together (at resolve)")
        if self.resize != "none" and self.image_size is None:
            raise ValueError(f"data.resize {self.resize!r} needs data.image_size")
        return self
