"""What every source is made of: shards of records (`Record = (payload, label, where)`), the `Source` protocol, and the
bounds of one source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shared.data.errors import DataError

MAX_SOURCE_RECORDS = 20_000_000  # records of one source: its labels and split mask are held in memory (~200 MB)

Record = tuple[object, int, str]


@dataclass(frozen=True)
class Shard:
    name: str  # for messages: a file, or a file and a row range
    num_records: int
    key: object = field(compare=False, repr=False)  # what the source needs to read it


class Source(Protocol):
    uri: str
    format: str
    labelled: bool
    class_names: tuple[str, ...]  # empty when the source names no classes (labels are then 0..max)

    def shards(self) -> list[Shard]: ...

    def read(self, shard: Shard) -> Iterator[Record]: ...

    def labels(self) -> np.ndarray:
        """Every record's label in shard order (int64), without reading the images; -1 when unlabelled."""
        ...


def row_ranges(name, n: int, size: int) -> list[Shard]:
    """Records 0..n-1 as shards of `size`, each keyed by its first record and named `name(start, end)`."""
    return [Shard(name(s, min(n, s + size)), min(n, s + size) - s, s) for s in range(0, n, size)]


def pick(names: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, where: str) -> str | None:
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"{where}: no {what} named {wanted!r}; it has {names}")
        return wanted
    return next((n for n in defaults if n in names), None)
