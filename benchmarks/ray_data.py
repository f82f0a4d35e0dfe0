"""`dblocks bench data`'s Ray Data probe: the ecosystem's streaming reader, timed on the same shards and the same
decode as this project's reader (benchmarks/data.py runs it in a fresh process:
`python -m benchmarks.ray_data SOURCE --read-batches N --cpus C`). A benchmark of Ray itself,
so it is, with the cluster benchmarks, one of the few coordinator modules that import Ray (tests/test_layering.py).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks.data import IMAGE_SIZE, vm_bytes


def probe_ray_data(source: str, read_batches: int, cpus: int) -> dict:
    """The same read as `probe`'s reader (decode with the same Transform, shuffle through a 1,024-record buffer,
    batches of 32) through Ray Data (`read_parquet` -> `map_batches` -> `iter_torch_batches`) on a fresh local Ray
    of `cpus` CPUs: images/s after the first batch, the time to the first batch, the peak RSS of this driver."""
    import ray

    from shared.data.decode import Transform

    transform = Transform(channels=3, image_size=IMAGE_SIZE)

    def decode(batch: dict) -> dict:
        images = np.stack([transform(bytes(b), "bench") for b in batch["image"]])
        return {"image": images, "label": np.asarray(batch["label"], dtype=np.int64)}

    started = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    rss_start = vm_bytes("VmRSS")
    dataset = ray.data.read_parquet(source, columns=["image", "label"]).map_batches(decode, batch_size=256)
    iterator = iter(dataset.iter_torch_batches(batch_size=32, local_shuffle_buffer_size=1024))
    next(iterator)
    first_s = time.perf_counter() - started
    started, images = time.perf_counter(), 0
    for _, batch in zip(range(read_batches), iterator):  # a dataset smaller than asked: what it has
        images += len(batch["label"])
    read_s = time.perf_counter() - started
    getattr(
        iterator, "close", lambda: None
    )()  # its clean-up calls into Ray: it must run before the shutdown, not at garbage collection
    del iterator, dataset
    ray.shutdown()
    return {
        "reader": "ray.data",
        "ray_cpus": cpus,
        "first_batch_s": first_s,
        "images_timed": images,
        "read_images_per_s": images / read_s,
        "driver_rss_after_init_bytes": rss_start,
        "driver_peak_rss_bytes": vm_bytes("VmHWM"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--read-batches", type=int, default=50)
    parser.add_argument("--cpus", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(probe_ray_data(args.source, args.read_batches, args.cpus)), flush=True)
    os._exit(0)  # after ray.shutdown() a Ray Data thread can keep the interpreter from exiting
