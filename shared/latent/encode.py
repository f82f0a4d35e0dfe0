"""`dblocks data encode`: any image source (folder, Parquet; local or S3) encoded once by a VAE into a latent cache
that training reads as a source (`shared/data/latents.py`). Streamed: one batch of images decoded at a time, at most
`PART_RECORDS` latents held before they are written. Resumable: every part is written whole (a temporary name, then
renamed), `encode.json` (written first) pins the source, VAE and transform, and a restarted encode keeps the parts
it finds and encodes the rest. `latents.json`, written last, makes the folder a source (docs/latent.md).

Layout of DEST: `encode.json`, `part-SSSSS-CCCC.npz` (`images`: N x C x h x w float32 latents, `labels`: N int64,
-1 when unlabelled; source shard S, chunk C), `latents.json` (the job, the parts and their record counts, the shape).
With `flip`, every image is followed by its horizontal mirror, and the manifest says `group: 2`: the train/test
split then keeps an image and its mirror together."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.data.decode import Transform
from shared.data.errors import DataError
from shared.data.sources import ReadLimits, open_source
from shared.latent.vae import Vae

FORMAT = "dblocks-latents"
VERSION = 1
JOB_FILE, MANIFEST_FILE = "encode.json", "latents.json"
PART_RECORDS = 4096  # latents per part file (and the most held in memory before a write)


@dataclass(frozen=True)
class EncodeJob:
    source: str
    image_size: int
    resize: str = "center_crop"  # none | resize | center_crop (shared/data/decode.py)
    flip: bool = False
    batch_size: int = 32
    format: str = "auto"
    image_column: str | None = None
    label_column: str | None = None

    def pinned(self, vae: Vae, uri: str) -> dict:
        """What a resumed encode must share with the parts already written."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": uri,
            "vae": vae.describe(),
            "transform": {"image_size": self.image_size, "resize": self.resize, "channels": vae.image_channels},
            "flip": self.flip,
            "group": 2 if self.flip else 1,
        }


def part_name(shard: int, chunk: int) -> str:
    return f"part-{shard:05d}-{chunk:04d}.npz"


def write_part(path: Path, latents: np.ndarray, labels: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, images=latents, labels=labels)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def part_records(path: Path) -> int:
    with np.load(path, allow_pickle=False) as part:
        return len(part["labels"])


def batches(records: Iterator, transform: Transform, size: int, flip: bool) -> Iterator[tuple[np.ndarray, list]]:
    """(images, labels) batches of decoded records; with `flip`, each image followed by its mirror."""
    images, labels = [], []
    for payload, label, where in records:
        image = transform(payload, where)
        images.append(image)
        labels.append(label)
        if flip:
            images.append(np.ascontiguousarray(image[:, :, ::-1]))
            labels.append(label)
        if len(images) >= size:
            yield np.stack(images), labels
            images, labels = [], []
    if images:
        yield np.stack(images), labels


def encode_shard(source, shard, transform: Transform, vae: Vae, job: EncodeJob, out: Path, index: int, tick) -> list:
    """Encode one source shard into its parts (those already on disk are kept); returns [(name, records)]."""
    written, chunk = [], 0
    done = lambda c: (out / part_name(index, c)).is_file()  # noqa: E731
    latents: list[np.ndarray] = []
    labels: list[int] = []
    per_image = 2 if job.flip else 1
    records = source.read(shard)
    while done(chunk):  # parts of an interrupted encode: skip their records without decoding them
        count = part_records(out / part_name(index, chunk))
        for _ in range(count // per_image):
            next(records)
        written.append((part_name(index, chunk), count))
        tick(count)
        chunk += 1
    for images, batch_labels in batches(records, transform, job.batch_size, job.flip):
        latents.append(vae.encode(torch.from_numpy(images)).numpy())
        labels += batch_labels
        tick(len(images))
        if len(labels) >= PART_RECORDS:
            written.append(flush(out, index, chunk, latents, labels))
            latents, labels, chunk = [], [], chunk + 1
    if labels:
        written.append(flush(out, index, chunk, latents, labels))
    return written


def flush(out: Path, index: int, chunk: int, latents: list[np.ndarray], labels: list[int]) -> tuple[str, int]:
    name = part_name(index, chunk)
    write_part(out / name, np.concatenate(latents).astype(np.float32), np.asarray(labels, dtype=np.int64))
    return name, len(labels)


def check_job(out: Path, pinned: dict) -> None:
    """A fresh DEST gets `encode.json`; a resumed one must hold an encode of the same source, VAE and transform."""
    job_path = out / JOB_FILE
    if job_path.is_file():
        before = json.loads(job_path.read_text())
        if before != pinned:
            differs = sorted(k for k in pinned if before.get(k) != pinned[k])
            raise DataError(f"{out}: holds an encode with another {', '.join(differs)}; use a new --out folder")
        return
    if any(out.iterdir()):
        raise DataError(f"{out}: not empty and not an encode in progress; use a new or empty --out folder")
    job_path.write_text(json.dumps(pinned, indent=2))


def encode_source(
    job: EncodeJob, vae: Vae, out: Path, *, progress: Callable[[int, int], None] = lambda done, total: None
) -> dict:
    """Encode `job.source` into `out` (resuming an interrupted encode there); returns the manifest."""
    vae.latent_size(job.image_size)  # the size must be a multiple of the VAE's downsampling
    options = {"format": job.format, "image_column": job.image_column, "label_column": job.label_column}
    source = open_source(job.source, **options, limits=ReadLimits())
    out.mkdir(parents=True, exist_ok=True)
    shards = source.shards()
    pinned = {**job.pinned(vae, source.uri), "source_records": sum(s.num_records for s in shards)}
    check_job(out, pinned)
    transform = Transform(channels=vae.image_channels, image_size=job.image_size, resize=job.resize)
    total = pinned["source_records"] * pinned["group"]
    done = [0]

    def tick(count: int) -> None:
        done[0] += count
        progress(done[0], total)

    parts = []
    for index, shard in enumerate(shards):
        parts += encode_shard(source, shard, transform, vae, job, out, index, tick)
    size = vae.latent_size(job.image_size)
    manifest = {
        **pinned,
        "shape": [vae.channels, size, size],
        "num_records": sum(n for _, n in parts),
        "labelled": bool(source.labelled),
        "class_names": list(source.class_names),
        "parts": [{"file": name, "records": n} for name, n in parts],
    }
    tmp = out / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out / MANIFEST_FILE)
    return manifest
