"""`dblocks data inspect SOURCE`: what a source holds, read the way training reads it. The config is resolved
first (so inspect fails exactly where `train` would, with the same message), then a sample of records is decoded
for the value range, the std and the read throughput."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from shared.data.resolve import data_shape, resolve_images
from shared.data.splits import open_split

if TYPE_CHECKING:
    from shared.config import Config


def inspect_data(config: Config, *, sample: int = 512, grid: Path | None = None) -> dict:
    config = resolve_images(config)
    d, shape = config.data, data_shape(config)
    train, test = open_split(d, "train"), open_split(d, "test")
    started, decoded = time.perf_counter(), []
    per_shard = -(-sample // len(train.shards))  # spread over the shards (a folder's are sorted by class)
    for index in range(len(train.shards)):
        for count, record in enumerate(train.shard_records(index)):
            if count >= per_shard or len(decoded) >= sample:
                break
            decoded.append(train.decode(record))
    read_s = time.perf_counter() - started
    values = np.stack(decoded)
    labels = train.labels()
    counts = np.bincount(labels, minlength=shape.num_classes) if shape.num_classes else np.zeros(0, dtype=np.int64)
    names = list(getattr(train.source, "class_names", ())) or [str(i) for i in range(shape.num_classes)]
    report = {
        "source": d.source or d.dataset,
        "format": d.format if d.source else "builtin",
        "num_examples": train.num_examples + test.num_examples,
        "num_train": train.num_examples,
        "num_test": test.num_examples,
        "shards": len(train.shards),
        "channels": shape.channels,
        "height": shape.image_size,
        "width": shape.image_size,
        "num_classes": shape.num_classes,
        "class_names": names,
        "class_counts": {name: int(c) for name, c in zip(names, counts)},
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "sigma_data": config.noise.sigma_data,
        "loader": d.loader,
        "sampled_records": len(decoded),
        "read_images_per_s": len(decoded) / read_s if read_s > 0 else None,
    }
    if grid is not None:
        from shared.images import save_grid

        picked = values[np.linspace(0, len(values) - 1, min(64, len(values))).astype(int)]
        save_grid(torch.from_numpy(picked).clamp(-1, 1), 8, grid)
        report["grid"] = str(grid)
    return report
