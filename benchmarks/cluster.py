"""Benchmarks through the real coordinator + Ray path: block-parallel scaling and dispatch latency.

scaling  B block jobs concurrently on B equal workers vs the same jobs one at a time (each then runs alone), same
         steps each: parallel efficiency = mean train time alone / mean train time concurrent. Plus the wall time of
         the block-parallel run vs end-to-end training at equal layer-updates, on the same total CPUs.
dispatch time from creating a run to each block's first training step, and coordinator overhead per block
         (launch -> SUCCEEDED minus the worker's own training time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.perf import machine
from coordinator.dispatch import RayDispatcher
from coordinator.runs import create_run
from coordinator.service import Coordinator
from coordinator.store import Store
from shared.config import Config
from shared.plan import layer_updates


def _variant(config: Config, overrides: list[str]) -> Config:
    return config.with_overrides(overrides)


def timed_run(
    config: Config,
    label: str,
    out_dir: Path,
    *,
    store: Store,
    dispatcher: RayDispatcher,
    max_in_flight: int | None = None,
    log: Callable[[str], None],
) -> dict:
    run_id = f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{config.hash()[:6]}"
    started = time.time()
    create_run(config, store=store, run_id=run_id, run_dir=out_dir / run_id)
    coordinator = Coordinator(
        store=store, dispatcher=dispatcher, log=log, max_in_flight=max_in_flight, only_runs={run_id}
    )
    coordinator.run_until_done(run_id, require_success=True)
    blocks = store.get_blocks(run_id)
    last_trained = max(b.finished_at for b in blocks)
    return {
        "run_id": run_id,
        "created_at": started,
        "blocks_wall_s": last_trained - started,
        "train_s": [b.train_s for b in blocks],
        "first_step_s": [b.first_step_at - started for b in blocks],
        "launch_to_first_step_s": [b.first_step_at - b.launched_at for b in blocks],
        "job_start_s": [b.entered_at - b.launched_at for b in blocks],
        "worker_setup_s": [b.first_step_at - b.entered_at for b in blocks],
        "overhead_s": [(b.finished_at - b.launched_at) - b.train_s for b in blocks],
        # the training loop's clock (train_s) starts at loop_started_at, before the first step
        "teardown_s": [b.finished_at - ((b.loop_started_at or b.first_step_at) + b.train_s) for b in blocks],
    }


def bench_scaling(
    config: Config, out_dir: Path, *, store: Store, dispatcher: RayDispatcher, log: Callable[[str], None]
) -> dict:
    b = config.blocks.num_blocks
    blockwise = _variant(config, ["resources.cpus_per_block=1", "resources.num_workers_per_block=1"])
    together = timed_run(blockwise, "scaling-parallel", out_dir, store=store, dispatcher=dispatcher, log=log)
    alone = timed_run(blockwise, "scaling-alone", out_dir, store=store, dispatcher=dispatcher, max_in_flight=1, log=log)
    e2e = timed_run(
        _variant(config, ["train.mode=end_to_end", f"resources.cpus_per_block={b}"]),
        "scaling-e2e",
        out_dir,
        store=store,
        dispatcher=dispatcher,
        log=log,
    )
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    hardware = hardware_efficiency(blockwise, out_dir)
    return {
        "benchmark": "scaling",
        "machine": machine(),
        "num_blocks": b,
        "hardware_efficiency": hardware["efficiency"],
        "hardware": hardware,
        "steps_per_block": config.train.steps_per_block,
        "efficiency": mean(alone["train_s"]) / mean(together["train_s"]),
        "block_train_s_alone": alone["train_s"],
        "block_train_s_concurrent": together["train_s"],
        "blockwise_wall_s": together["blocks_wall_s"],
        "e2e_wall_s": e2e["blocks_wall_s"],
        "e2e_cpus": b,
        "e2e_train_s": e2e["train_s"][0],
        "wall_ratio_e2e_over_blockwise": e2e["blocks_wall_s"] / together["blocks_wall_s"],
        "layer_updates": layer_updates(config),
    }


def hardware_efficiency(config: Config, out_dir: Path) -> dict:
    """The same block jobs as plain processes (`python -m workers`, no Ray, no coordinator): all at once vs one
    at a time. What the machine itself allows; the gap to `efficiency` is the service's own overhead."""
    import json
    import os
    import subprocess
    import sys

    path = out_dir / "scaling-hardware.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(index: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers",
                str(path),
                "--block",
                str(index),
                "--out",
                str(out_dir / f"hw-{index}"),
                "--set",
                "train.preview_every_steps=0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def train_s(proc: subprocess.Popen) -> float:
        out, _ = proc.communicate()
        return json.loads(out.strip().splitlines()[-1])["train_s"]

    indices = range(config.blocks.num_blocks)
    alone = [train_s(launch(i)) for i in indices]
    together = [train_s(p) for p in [launch(i) for i in indices]]
    return {
        "efficiency": (sum(alone) / len(alone)) / (sum(together) / len(together)),
        "train_s_alone": alone,
        "train_s_concurrent": together,
    }


def bench_dispatch(
    config: Config,
    out_dir: Path,
    *,
    store: Store,
    dispatcher: RayDispatcher,
    log: Callable[[str], None],
    job_s_reference: float = 600.0,
) -> dict:
    dispatcher.capacity()  # the cluster is up and warm before the clock starts
    run = timed_run(config, "dispatch", out_dir, store=store, dispatcher=dispatcher, log=log)
    overhead = max(run["overhead_s"])
    return {
        "benchmark": "dispatch",
        "machine": machine(),
        "num_blocks": config.blocks.num_blocks,
        "first_step_s": max(run["first_step_s"]),
        "first_step_s_per_block": run["first_step_s"],
        "launch_to_first_step_s": run["launch_to_first_step_s"],
        # launch -> the block's training entry point (its job actor, or Ray Train's start for a data-parallel block);
        # `ray_train_start_s`: the same figure under its name from before block actors trained themselves
        "job_start_s": run["job_start_s"],
        "ray_train_start_s": run["job_start_s"],
        "worker_setup_s": run["worker_setup_s"],
        "overhead_s_per_block": run["overhead_s"],
        "teardown_s_per_block": run["teardown_s"],
        "overhead_fraction_of_10min_job": overhead / job_s_reference,
    }
