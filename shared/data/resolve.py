"""From a data config to the data's facts, once, before anything starts: `resolve_images(config)` opens the source,
checks its metadata and a sample of records, and returns the config with the facts the rest of the system reads
filled in (`data.channels`, `data.image_size`, `data.num_classes`, `data.loader`; `noise.sigma_data` of NumPy
sources and latent caches left unset; the VAE of a latent cache, `shared/latent/resolve.py`). A run's stored
config is the resolved one, so workers, sampling and evaluation never open the source to learn its shape.
`data_shape(config)` reads those facts. (`shared.tasks.resolve_data` is the entry point: it confines a service
caller's sources and lets the run's task pick its resolver.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.data.builtin import DATASETS
from shared.data.errors import DataError
from shared.data.paths import confine
from shared.data.sources import ReadLimits, open_source
from shared.data.splits import SplitReader, open_split, transform_of

if TYPE_CHECKING:
    from shared.config import Config

VALIDATE_RECORDS = 32  # records decoded per split at resolve time (first of each shard first, then the first shard)
SIGMA_DATA_RECORDS = 1024  # records whose std sets sigma_data for arrays the user gave no scale for


@dataclass(frozen=True)
class DataShape:
    channels: int
    image_size: int
    num_classes: int  # 0: unlabelled, an unconditional model


def data_shape(config: Config) -> DataShape:
    d = config.data
    if d.source is None:
        info = DATASETS[d.dataset]
        return DataShape(info.channels, info.image_size, info.num_classes)
    if d.channels is None or d.image_size is None or d.num_classes is None:
        raise DataError(f"data.source {d.source}: not resolved yet (shared.data.resolve_data fills in its shape)")
    return DataShape(d.channels, d.image_size, d.num_classes)


def sample_records(reader: SplitReader, count: int) -> list:
    """Up to `count` records: the first of every shard (corruption is often per file), then from the start."""
    picked, seen = [], set()
    for index in range(len(reader.shards)):
        if len(picked) >= count // 2:
            break
        record = next(reader.shard_records(index), None)
        if record is not None:
            picked.append(record)
            seen.add(record[2])
    for record in reader.records():
        if len(picked) >= count:
            break
        if record[2] not in seen:
            picked.append(record)
    return picked


def check_labels(reader: SplitReader, num_classes: int, split: str) -> None:
    labels = reader.labels()
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes)) if num_classes else np.zeros(0, dtype=np.int64)
    if len(bad):
        index = int(np.flatnonzero(reader.keep)[bad[0]]) if reader.keep is not None else int(bad[0])
        shard = int(np.searchsorted(reader.offsets, index, side="right")) - 1
        where = f"{reader.shards[shard].name}#{index - int(reader.offsets[shard])}"
        raise DataError(
            f"{where} ({split} split): label {int(labels[bad[0]])} is out of range 0..{num_classes - 1} "
            f"({len(bad)} such records)"
        )


def confine_sources(config: Config, sources: list[tuple[str, str]], roots: tuple[str, ...]) -> Config:
    """The config with each of `sources` ((field, path), as its task names them) parsed and confined to `roots`
    (shared/data/paths.py): what is then opened is exactly the path that was checked."""
    values = {field: confine(uri, roots, field) for field, uri in sources}
    return config.with_values(values) if values else config


def resolve_images(config: Config, *, confined: bool = False) -> Config:
    """The config with its image data facts filled in, after validating the source; DataError names what is wrong.
    `confined`: a service caller's source, already confined to the roots (symlinks out of its folder refused)."""
    from shared.latent.resolve import resolve_encoded, resolve_vae  # shared.latent reads shared.data: when used

    d = config.data
    if d.source is None:
        return config
    if d.encoded_from is not None:  # a run the service encodes, resolved before: its images, checked again
        return resolve_encoded(config, confined=confined, resolve_images=resolve_images)
    limits = ReadLimits(confined=confined, max_read_bytes=d.memory_limit_mb * 2**20)
    options = {"format": d.format, "image_column": d.image_column, "label_column": d.label_column}
    source = open_source(d.source, **options, limits=limits)
    if d.vae is not None and source.format != "latents":  # images and a VAE: the service encodes them
        return resolve_encoded(config, confined=confined, resolve_images=resolve_images)
    vae = resolve_vae(config, source, confined=confined)  # before any record is decoded
    train = open_split(d, "train", source=source, limits=limits)
    test = open_split(d, "test", source=source, limits=limits)
    for name, reader in (("train", train), ("test", test)):
        if reader.num_examples == 0:
            where = d.test_source if name == "test" and d.test_source else d.source
            hint = "" if name == "train" or d.test_source else " (raise data.test_fraction or set data.test_source)"
            raise DataError(f"{where}: the {name} split is empty{hint}")
    first = train.decode(sample_records(train, 1)[0])
    channels, image_size = d.channels or first.shape[0], d.image_size or first.shape[1]
    # Local paths become absolute: workers run elsewhere (another cwd, another node with the same mount).
    resolved = {"data.source": source.uri, "data.channels": channels, "data.image_size": image_size, **vae}
    resolved["data.format"] = source.format
    if d.test_source is not None:
        resolved["data.test_source"] = test.source.uri
    probe = config.with_values(resolved)
    for name, reader in (("train", train), ("test", test)):
        reader = SplitReader(reader.source, transform_of(probe.data), reader.keep)
        for record in sample_records(reader, VALIDATE_RECORDS):
            reader.decode(record)  # raises DataError naming the record
    labelled = train.source.labelled
    if test.source.labelled != labelled:
        raise DataError(f"{d.test_source}: labelled is {test.source.labelled}, the train source's is {labelled}")
    num_classes = d.num_classes
    if num_classes is None:
        num_classes = int(train.labels().max()) + 1 if labelled else 0
    for name, reader in (("train", train), ("test", test)):
        if labelled:
            check_labels(reader, num_classes, name)
    resolved["data.num_classes"] = num_classes
    if d.loader == "auto":
        decoded_bytes = train.num_examples * channels * image_size**2 * 4
        resolved["data.loader"] = "memory" if decoded_bytes <= d.memory_limit_mb * 2**20 else "stream"
    if source.format in ("numpy", "latents") and "sigma_data" not in config.noise.model_fields_set:
        values = [train.decode(r) for r in sample_records(train, SIGMA_DATA_RECORDS)]
        resolved["noise.sigma_data"] = float(np.std(np.stack(values))) or 1.0
    return config.with_values(resolved)
