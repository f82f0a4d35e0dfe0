"""`dblocks bench coordinator`: the reconcile loop's cost per tick at scale, on real Redis.

One machine cannot train a thousand runs, so the cluster is simulated behind the coordinator's own dispatcher
interface (coordinator/jobs.py): `SimulatedCluster` admits every block, and on each wait advances every job and
writes its progress file, as a Train worker would. Everything else is the real service: `Coordinator.tick`, the
reconcilers, `Store` on a real redis-server, progress files on disk. For 10, 100 and 1,000 active runs of 8 blocks
it reports the tick's work time (the simulated workers' writes excluded) and its Redis round trips (each request
or pipeline sent is one), then adds finished runs and shows the tick's cost does not move.
"""

from __future__ import annotations

import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.jobs import JobResult
from coordinator.reconcile import NOTHING, Resources
from coordinator.records import State
from coordinator.runs import create_run
from coordinator.service import Coordinator
from coordinator.store import RoundTrips, Store, close_embedded, connect
from shared.config import Config, parse_config
from shared.job import BlockJob, progress_path
from shared.storage import Storage

BLOCKS_PER_RUN = 8
RUN_CONFIG = {
    "name": "bench-coord",
    "model": {"num_layers": 8, "hidden_size": 32, "num_heads": 2, "patch_size": 7},
    "blocks": {"num_blocks": BLOCKS_PER_RUN},
    "train": {"steps_per_block": 1_000_000},  # never finishes while measured: every block stays in flight
}


class SimulatedCluster:
    """The dispatcher interface over a cluster that admits everything; each `wait` is one training interval of
    every job in flight (its step advanced, its progress file written). Jobs never end on their own."""

    def __init__(self, steps_per_wait: int = 10):
        self.steps_per_wait = steps_per_wait
        self.jobs: dict[tuple[str, int], tuple[BlockJob, Storage, int]] = {}
        self.worker_s = 0.0  # time spent being the workers (not the coordinator's)

    def capacity(self) -> Resources:
        return Resources(cpu=1e9, gpu=0.0, memory=1e18)

    def held(self) -> Resources:
        return NOTHING

    def in_flight(self, run_id: str) -> set[int]:
        return {index for rid, index in self.jobs if rid == run_id}

    def num_in_flight(self) -> int:
        return len(self.jobs)

    def submit(self, job: BlockJob, storage_uri: str, demand: Resources, previews: bool = True, *, attempt=1) -> str:
        self.jobs[(job.run_id, job.block.index)] = (job, Storage.from_uri(storage_uri), 0)
        return job.name

    def attach(self, job: BlockJob, demand: Resources, *, attempt: int) -> bool:
        return False

    def wait(self, timeout_s: float) -> list[JobResult]:
        started = time.perf_counter()
        for key, (job, storage, step) in list(self.jobs.items()):
            step += self.steps_per_wait
            storage.write_text(progress_path(storage, job), json.dumps({"step": step, "loss": 1.0 / step}))
            self.jobs[key] = (job, storage, step)
        self.worker_s += time.perf_counter() - started
        return []

    def cancel(self, run_id: str) -> None:
        for key in [k for k in self.jobs if k[0] == run_id]:
            del self.jobs[key]

    def stop(self, job: BlockJob, *, attempt: int) -> None:
        self.jobs.pop((job.run_id, job.block.index), None)

    def forget(self) -> None:
        self.jobs.clear()

    def ready(self) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _measure(coordinator: Coordinator, cluster: SimulatedCluster, ticks: int) -> dict:
    """Work time (ms) and Redis round trips of `ticks` ticks, one by one."""
    times, trips = [], []
    for _ in range(ticks):
        sent, worker = RoundTrips.sent, cluster.worker_s
        started = time.perf_counter()
        coordinator.tick()
        times.append((time.perf_counter() - started - (cluster.worker_s - worker)) * 1000)
        trips.append(RoundTrips.sent - sent)
    return {
        "tick_ms_median": statistics.median(times),
        "tick_ms_max": max(times),
        "round_trips_per_tick": statistics.median(trips),
    }


def _scenario(client, work_dir: Path, config: Config, active: int, finished: int, ticks: int, log) -> dict:
    store = Store(client, prefix=f"bench-coord-{secrets.token_hex(4)}")
    try:
        for i in range(finished):  # ended runs: records only, as a service keeps them until their retention
            run_id = f"ended{i:05d}"
            create_run(config, store=store, run_id=run_id, run_dir=work_dir / store.prefix / run_id)
            store.set_run_state(run_id, State.SUCCEEDED)
        for i in range(active):
            run_id = f"run{i:05d}"
            create_run(config, store=store, run_id=run_id, run_dir=work_dir / store.prefix / run_id)
        cluster = SimulatedCluster()
        coordinator = Coordinator(
            store=store, dispatcher=cluster, log=lambda _: None, poll_s=0.0, progress_every_s=float("inf")
        )
        sent = RoundTrips.sent
        started = time.perf_counter()
        coordinator.tick()  # the first tick loads every run and launches all its blocks
        admission = {
            "admission_tick_s": time.perf_counter() - started - cluster.worker_s,
            "admission_round_trips": RoundTrips.sent - sent,
        }
        assert cluster.num_in_flight() == active * BLOCKS_PER_RUN, "every block should be in flight"
        steady = _measure(coordinator, cluster, ticks)
        result = {"active_runs": active, "finished_runs": finished, "blocks_in_flight": cluster.num_in_flight()}
        result |= admission | steady
        log(json.dumps(result))
        return result
    finally:
        keys = list(client.scan_iter(f"{store.prefix}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.delete(*keys[start : start + 10_000])


def bench_coordinator(
    *,
    redis_url: str | None,
    active_runs: tuple[int, ...] = (10, 100, 1000),
    finished_runs: int = 1000,
    log: Callable[[str], None] = print,
) -> dict:
    """The tick's cost against active and finished runs (module docstring)."""
    config = parse_config(RUN_CONFIG)
    with tempfile.TemporaryDirectory(prefix="dblocks-bench-coord-") as tmp:
        work_dir = Path(tmp)
        base = connect(redis_url, work_dir / "redis")
        client = RoundTrips.counting(base)
        try:
            curve = [_scenario(client, work_dir, config, n, 0, 10 if n <= 100 else 3, log) for n in active_runs]
            smallest = min(active_runs)
            with_finished = _scenario(client, work_dir, config, smallest, finished_runs, 10, log)
        finally:
            client.close()
            close_embedded(base)
    alone = next(c for c in curve if c["active_runs"] == smallest)
    # a line through the smallest and largest counts: fixed round trips per tick + a cost per active run
    low, high = curve[0], curve[-1]
    span = high["active_runs"] - low["active_runs"]
    per_run = (high["round_trips_per_tick"] - low["round_trips_per_tick"]) / span if span else 0.0
    fixed = low["round_trips_per_tick"] - per_run * low["active_runs"]
    on_line = all(
        abs(c["round_trips_per_tick"] - (fixed + per_run * c["active_runs"])) <= 0.05 * c["round_trips_per_tick"]
        for c in curve
    )
    return {
        "benchmark": "coordinator",
        "blocks_per_run": BLOCKS_PER_RUN,
        "redis": "REDIS_URL" if redis_url else "embedded redis-server",
        "curve": curve,
        "with_finished_runs": with_finished,
        "round_trips_fixed_per_tick": fixed,
        "round_trips_per_active_run": per_run,
        # cost grows at most linearly in active runs: every point within 5 % of that line
        "linear_in_active_runs": on_line,
        "flat_in_finished_runs": with_finished["round_trips_per_tick"] == alone["round_trips_per_tick"],
    }
