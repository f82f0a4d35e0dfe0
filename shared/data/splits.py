"""Train and held-out test splits of a data config, as readers of records (nothing decoded until asked).

- The built-in dataset keeps its own fixed split (`data.num_test` images by `data.split_seed`).
- A source with `data.test_source`: the test split is that source, whole.
- Otherwise each record of the source goes to the test split with probability `data.test_fraction`, decided by a
  hash of (split_seed, record index): deterministic, the same on every node, and computed without reading data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from shared.data.builtin import load_builtin
from shared.data.decode import Transform
from shared.data.errors import DataError
from shared.data.sources import ArraySource, ReadLimits, Record, Source, open_source

if TYPE_CHECKING:
    from shared.data.config import DataConfig

SPLITS = ("train", "test")


def in_test_split(indices: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Whether each record index belongs to the test split: splitmix64 of (seed, index) below fraction * 2**64."""
    with np.errstate(over="ignore"):
        z = indices.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z < np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))


class SplitReader:
    """The records of one split: shards of the source, filtered by the split's membership test."""

    def __init__(self, source: Source, transform: Transform, keep: np.ndarray | None = None):
        self.source, self.transform = source, transform
        self.shards = source.shards()
        self.offsets = np.cumsum([0] + [s.num_records for s in self.shards])
        self.keep = keep  # per record of the source: in this split; None = all

    @property
    def num_examples(self) -> int:
        return int(self.offsets[-1]) if self.keep is None else int(self.keep.sum())

    def labels(self) -> np.ndarray:
        labels = self.source.labels()
        return labels if self.keep is None else labels[self.keep]

    def shard_records(self, shard_index: int) -> Iterator[Record]:
        start = self.offsets[shard_index]
        for i, record in enumerate(self.source.read(self.shards[shard_index])):
            if self.keep is None or self.keep[start + i]:
                yield record

    def records(self, order: list[int] | None = None) -> Iterator[Record]:
        for shard_index in order if order is not None else range(len(self.shards)):
            yield from self.shard_records(shard_index)

    def decode(self, record: Record) -> np.ndarray:
        return self.transform(record[0], record[2])


def transform_of(data: DataConfig) -> Transform:
    return Transform(channels=data.channels, image_size=data.image_size, resize=data.resize)


def open_split(
    data: DataConfig, split: str, *, source: Source | None = None, limits: ReadLimits = ReadLimits()
) -> SplitReader:
    """The reader of `split` ('train' or 'test') under a data config; `source`: the train source, if already open."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if data.source is None:
        images, labels = load_builtin(data.dataset, split, num_test=data.num_test, split_seed=data.split_seed)
        return SplitReader(ArraySource(images.numpy(), labels.numpy(), data.dataset), Transform())
    if data.encoded_from is not None:  # a latent cache the service builds: the first job to read it builds it
        from shared.latent.cache import ensure_latents  # shared.latent reads shared.data: imported when used

        ensure_latents(data)
    options = {"format": data.format, "image_column": data.image_column, "label_column": data.label_column}
    options["limits"] = limits
    if split == "test" and data.test_source is not None:
        return SplitReader(open_source(data.test_source, **options), transform_of(data))
    source = source or open_source(data.source, **options)
    total = sum(s.num_records for s in source.shards())
    if data.test_source is not None:
        return SplitReader(source, transform_of(data))
    group = getattr(source, "group", 1)  # records the split keeps together (a latent cache's image and its mirror)
    test = in_test_split(np.arange(total) // group, data.split_seed, data.test_fraction)
    return SplitReader(source, transform_of(data), test if split == "test" else ~test)


def load_split(data: DataConfig, split: str, *, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, C, H, W), labels int64 (N,)) of a split, in memory; `limit`: the first N records only.
    Unlabelled records get label 0, the null class of an unconditional model (num_classes 0)."""
    if data.source is None:
        images, labels = load_builtin(data.dataset, split, num_test=data.num_test, split_seed=data.split_seed)
        return (images[:limit], labels[:limit]) if limit is not None else (images, labels)
    reader = open_split(data, split)
    images, labels = [], []
    for record in reader.records():
        if limit is not None and len(images) >= limit:
            break
        images.append(reader.decode(record))
        labels.append(max(record[1], 0))
    if not images:
        raise DataError(f"data: the {split} split of {data.source} is empty")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64, device="cpu")
