"""`dblocks bench data`: does a block worker's memory stay flat as the dataset grows, and can the reader keep up?

Two Parquet datasets of random-noise RGB PNGs (incompressible, so bytes on disk = the size asked for) are written
once under the cache directory, ~`small_mb` and ~`large_mb`. For each, a fresh process
(`python -m benchmarks.data --probe SOURCE`) resolves the config, streams the train split (`data.loader:
stream`) and trains one block for `steps` steps exactly as a worker does, then reports its peak resident memory
(VmHWM), the training step rate and, separately, the reader's own rate (records decoded per second by the streaming
batches with no training). The JSON compares the two peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.perf import machine

IMAGE_SIZE = 64
ROWS_PER_SHARD = 4096
ROW_GROUP = 512
PROBE_OVERRIDES = [
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.num_heads=4",
    "model.patch_size=8",
    "blocks.num_blocks=2",
    "train.batch_size=32",
    "train.log_every_steps=10",
    "train.checkpoint_every_steps=1000000",
    "train.preview_every_steps=0",
    "data.loader=stream",
    "data.shuffle_buffer=1024",
    "data.test_fraction=0.01",
]


def write_noise_parquet(path: Path, megabytes: float, seed: int = 0) -> dict:
    """Shards of random RGB PNGs totalling about `megabytes` MB, with 10-class labels; reused when present."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    done = path / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written, rows, shard = 0, 0, 0
    while written < megabytes * 1e6:
        images, labels = [], []
        for _ in range(ROWS_PER_SHARD):
            out = io.BytesIO()
            pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
            images.append(out.getvalue())
            labels.append(int(rng.integers(10)))
            written += len(images[-1])
            if written >= megabytes * 1e6:
                break
        table = pa.table({"image": images, "label": labels})
        pq.write_table(table, path / f"train-{shard:05d}.parquet", row_group_size=ROW_GROUP, compression="none")
        rows, shard = rows + len(images), shard + 1
    info = {"rows": rows, "shards": shard, "bytes": sum(p.stat().st_size for p in path.glob("*.parquet"))}
    done.write_text(json.dumps(info))
    return info


def vm_bytes(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) * 1024


def probe(source: str, steps: int, read_batches: int) -> dict:
    """In this process: resolve, read `read_batches` batches (reader rate), train one block `steps` steps."""
    import torch

    from shared.config import parse_config
    from shared.data import train_batches
    from shared.job import BlockJob
    from shared.plan import block_specs
    from shared.tasks import resolve_data
    from workers.reporting import ListReporter
    from workers.train_block import train_block

    torch.set_num_threads(1)
    config = resolve_data(
        parse_config({"data": {"source": source}}, PROBE_OVERRIDES + [f"train.steps_per_block={steps}"])
    )
    job = BlockJob(run_id="bench-data", config=config, block=block_specs(config)[0])
    rss_start = vm_bytes("VmRSS")
    reader = train_batches(config.data, seed=job.seed)
    started = time.perf_counter()
    for _ in range(read_batches):
        reader.next_batch(config.train.batch_size)
    read_s = time.perf_counter() - started
    reporter = ListReporter()
    final = train_block(job, data=train_batches(config.data, seed=job.seed), reporter=reporter)
    return {
        "source": source,
        "num_examples": sum(s.num_records for s in reader.reader.shards),
        "loader": config.data.loader,
        "rss_after_imports_bytes": rss_start,
        "peak_rss_bytes": vm_bytes("VmHWM"),
        "read_images_per_s": read_batches * config.train.batch_size / read_s,
        "train_steps_per_s": final["step"] / final["train_s"],
        "train_images_per_s": final["step"] * config.train.batch_size / final["train_s"],
        "steps": final["step"],
    }


def probe_reader_only(source: str, read_batches: int) -> dict:
    """This project's streaming reader alone, timed like `probe_ray_data` (first batch, then images/s)."""
    from shared.config import parse_config
    from shared.data import train_batches
    from shared.plan import block_seed
    from shared.tasks import resolve_data

    started = time.perf_counter()
    config = resolve_data(parse_config({"data": {"source": source}}, PROBE_OVERRIDES))
    reader = train_batches(config.data, seed=block_seed(config.train.seed, 0))
    reader.next_batch(32)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(read_batches):
        reader.next_batch(32)
    read_s = time.perf_counter() - started
    return {
        "reader": "dblocks",
        "first_batch_s": first_s,
        "images_timed": read_batches * 32,
        "read_images_per_s": read_batches * 32 / read_s,
        "peak_rss_bytes": vm_bytes("VmHWM"),
    }


def _run_probe(*args: str, module: str = "benchmarks.data") -> dict:
    """A probe in a fresh process (`python -m module args`): its last line of output, as JSON."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=1800,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_readers(source: str, read_batches: int, ray_data_cpus: tuple[int, ...] | None = None) -> dict:
    """Ray Data against this reader on the same shards, each in a fresh process: by default Ray Data on 1 CPU (a
    block worker's share here) and on every CPU of the machine (its parallel decode is its strength)."""
    cpus = ray_data_cpus or tuple(sorted({1, os.cpu_count() or 1}))
    readers = {"dblocks": _run_probe("--reader-only", source, "--read-batches", str(read_batches))}
    for n in cpus:
        args = (source, "--read-batches", str(read_batches), "--cpus", str(n))
        readers[f"ray_data_{n}cpu"] = _run_probe(*args, module="benchmarks.ray_data")
    return readers


def bench_data(
    cache_dir: Path,
    *,
    small_mb: float,
    large_mb: float,
    steps: int,
    read_batches: int,
    ray_data_cpus: tuple[int, ...] | None = None,
) -> dict:
    cases = {}
    for name, megabytes in (("small", small_mb), ("large", large_mb)):
        path = cache_dir / f"bench-data-noise-{IMAGE_SIZE}px-{megabytes:g}mb"
        info = write_noise_parquet(path, megabytes)
        probed = _run_probe("--probe", str(path), "--steps", str(steps), "--read-batches", str(read_batches))
        cases[name] = {**info, "megabytes": megabytes, **probed}
    difference = cases["large"]["peak_rss_bytes"] - cases["small"]["peak_rss_bytes"]
    return {
        "benchmark": "data",
        "machine": machine(),
        "image_size": IMAGE_SIZE,
        "steps": steps,
        "cases": cases,
        "peak_rss_difference_bytes": difference,
        "within_200mb": difference <= 200 * 2**20,
        "reader_over_training_rate": cases["large"]["read_images_per_s"] / cases["large"]["train_images_per_s"],
        "readers": compare_readers(cases["small"]["source"], read_batches, ray_data_cpus),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--probe")
    group.add_argument("--reader-only")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--read-batches", type=int, default=50)
    args = parser.parse_args()
    if args.reader_only:
        print(json.dumps(probe_reader_only(args.reader_only, args.read_batches)))
    else:
        print(json.dumps(probe(args.probe, args.steps, args.read_batches)))
