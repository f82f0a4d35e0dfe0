"""Batches for the training loop, from memory or streamed.

`MemoryBatches`: the whole split as one tensor, batches drawn with the training generator (small datasets; the
built-in one). `StreamBatches`: the split read shard by shard through a bounded shuffle buffer, so a worker's memory
does not grow with the dataset. Its order is a pure function of (seed, epoch): each epoch permutes the shards, then
a buffer of `buffer_size` records swaps in each new record at a random slot and emits the one it replaces. Its
state is (epoch, records emitted in this epoch); a restarted worker replays the epoch's record stream up to that
position without decoding, and continues exactly where it stopped. With several data-parallel workers in a block,
rank r takes every world_size-th record of the same stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from shared.data.errors import DataError
from shared.data.sources import Record
from shared.data.splits import SplitReader, load_split, open_split

if TYPE_CHECKING:
    from shared.data.config import DataConfig


class MemoryBatches:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def to(self, device: torch.device) -> MemoryBatches:
        return MemoryBatches(self.images.to(device), self.labels.to(device))

    def next_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(self.labels), (batch_size,), generator=generator, device=self.images.device)
        return self.images[index], self.labels[index]

    def state_dict(self) -> dict | None:
        return None  # the training generator (saved with the checkpoint) is the whole state

    def load_state_dict(self, state: dict | None) -> None:
        pass


def shuffled(reader: SplitReader, seed: int, epoch: int, buffer_size: int) -> Iterator[Record]:
    """One epoch of the split's records in this (seed, epoch)'s order."""
    rng = np.random.default_rng([seed % 2**63, epoch])
    order = rng.permutation(len(reader.shards)).tolist()
    buffer: list[Record] = []
    for record in reader.records(order):
        if len(buffer) < buffer_size:
            buffer.append(record)
            continue
        slot = int(rng.integers(buffer_size))
        buffer[slot], record = record, buffer[slot]
        yield record
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


class StreamBatches:
    def __init__(
        self,
        reader: SplitReader,
        *,
        seed: int,
        buffer_size: int,
        rank: int = 0,
        world_size: int = 1,
        skip_corrupt: bool = False,
        on_skip: Callable[[str], None] = lambda where: None,
        device: torch.device = torch.device("cpu"),
    ):
        if reader.num_examples < world_size:
            raise DataError(f"the train split has {reader.num_examples} records, fewer than {world_size} workers")
        self.reader, self.seed, self.buffer_size = reader, seed, buffer_size
        self.rank, self.world_size, self.skip_corrupt, self.on_skip = rank, world_size, skip_corrupt, on_skip
        self.device = device
        self.epoch, self.position, self.skipped = 0, 0, 0
        self._records: Iterator[Record] | None = None

    def to(self, device: torch.device) -> StreamBatches:
        self.device = device
        return self

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            return
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state.get("skipped", 0)
        self._records = None

    def _next_record(self) -> Record:
        while True:
            if self._records is None:
                self._records = shuffled(self.reader, self.seed, self.epoch, self.buffer_size)
                for _ in range(self.position):  # resume: replay this epoch up to where it stopped, undecoded
                    next(self._records)
            record = next(self._records, None)
            if record is None:
                self.epoch, self.position, self._records = self.epoch + 1, 0, None
                continue
            self.position += 1
            if (self.position - 1) % self.world_size == self.rank:
                return record

    def next_batch(self, batch_size: int, generator: torch.Generator | None = None):
        images, labels = [], []
        while len(images) < batch_size:
            record = self._next_record()
            try:
                images.append(self.reader.decode(record))
            except DataError:
                if not self.skip_corrupt:
                    raise
                self.skipped += 1
                self.on_skip(record[2])
                if self.skipped > self.reader.num_examples:
                    raise DataError(f"every record of the train split is unreadable (last: {record[2]})") from None
                continue
            labels.append(max(record[1], 0))
        batch = torch.from_numpy(np.stack(images)).to(self.device)
        return batch, torch.tensor(labels, dtype=torch.int64, device=self.device)


Batches = MemoryBatches | StreamBatches


def train_batches(
    data: DataConfig,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    on_skip: Callable[[str], None] = lambda where: None,
) -> Batches:
    """The training batches of a resolved data config: in memory or streamed, as `data.loader` says."""
    if data.source is None or data.loader == "memory":
        return MemoryBatches(*load_split(data, "train"))
    return StreamBatches(
        open_split(data, "train"),
        seed=seed,
        buffer_size=data.shuffle_buffer,
        rank=rank,
        world_size=world_size,
        skip_corrupt=data.skip_corrupt,
        on_skip=on_skip,
    )
