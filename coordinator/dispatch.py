"""The only module that talks to Ray: cluster connection, capacity, and block jobs in flight.

Each block job is a Ray task (`num_cpus=0`, so it holds no CPU itself) that runs one block's TorchTrainer.fit()
to completion; the Train workers it starts hold the block's CPUs/GPUs. Cancelling the task kills its trainer.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import ray

from coordinator.reconcile import NOTHING, Resources
from shared.job import BlockJob
from workers.ray_entry import fit_block

# Variables a local cluster's processes must inherit (Ray Train reads its own from the driver's environment).
# AWS_*: credentials and endpoint of an S3-compatible checkpoint store, needed wherever a block trains.
_PROPAGATED_PREFIXES = ("RAY_TRAIN_", "OMP_NUM_THREADS", "AWS_")


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """How one block job in flight ended."""

    run_id: str
    block_index: int
    ok: bool
    checkpoint_path: str | None
    metrics: dict
    error: str | None
    node: str


_WARM_WORKERS = 8


def _import_entry_point() -> None:
    import workers.ray_entry  # noqa: F401


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayDispatcher:
    def __init__(self, *, address: str | None, auth_mode: str = "disabled"):
        self.address = address
        self.auth_mode = auth_mode
        self._refs: dict[ray.ObjectRef, tuple[str, int]] = {}
        self._demand: dict[ray.ObjectRef, Resources] = {}
        self._remote = ray.remote(num_cpus=0, max_retries=0)(fit_block)

    def connect(self, num_cpus: int | None = None) -> None:
        os.environ["RAY_AUTH_MODE"] = self.auth_mode
        if ray.is_initialized():
            return
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(_PROPAGATED_PREFIXES)}
        if self.address:
            ray.init(
                address=self.address,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": env_vars} if env_vars else None,
            )
        else:
            self._start_local_cluster(num_cpus, env_vars)
        self._warm_task_workers()

    def _start_local_cluster(self, num_cpus: int | None, env_vars: dict[str, str]) -> None:
        # "local": always start our own cluster; address=None would join whatever `ray start` left recorded
        # in /tmp/ray/ray_current_cluster, even a dead one. Ray Train's placement-group cleaner asks the State
        # API whether the controller lives, and without an address it too looks up that file: a stale one
        # made every fit() wait 12 s at teardown for its timeout. So we run the dashboard (the State API
        # server) on loopback and tell every process of the cluster where it is.
        port = _free_loopback_port()
        env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": env_vars},
        )

    def _warm_task_workers(self) -> None:
        """Import the block entry point (Ray Train + torch, ~2.5 s in a fresh process) in as many pooled task
        workers as blocks can start at once, so the first blocks do not pay it (measured: first step 13.3 -> 10.9 s,
        docs/benchmarks.md). Ray reuses an idle worker of the same job for the next task."""
        count = max(1, min(_WARM_WORKERS, int(ray.cluster_resources().get("CPU", 1))))
        warm = ray.remote(num_cpus=0)(_import_entry_point)
        ray.get([warm.remote() for _ in range(count)])

    def capacity(self) -> Resources:
        total = ray.cluster_resources()
        return Resources(cpu=total.get("CPU", 0.0), gpu=total.get("GPU", 0.0), memory=total.get("memory", 0.0))

    def in_flight(self, run_id: str) -> set[int]:
        return {index for rid, index in self._refs.values() if rid == run_id}

    def num_in_flight(self) -> int:
        """Block jobs in flight over every run."""
        return len(self._refs)

    def held(self) -> Resources:
        """Resources our in-flight block jobs hold, over every run."""
        return sum(self._demand.values(), NOTHING)

    def ready(self) -> bool:
        return ray.is_initialized() and bool(ray.cluster_resources())

    def submit(self, job: BlockJob, storage_uri: str, demand: Resources, previews: bool = True) -> str:
        ref = self._remote.remote(job.to_dict(), storage_uri, previews)
        self._refs[ref] = (job.run_id, job.block.index)
        self._demand[ref] = demand
        return job.name

    def wait(self, timeout_s: float) -> list[JobResult]:
        """Results of the jobs that ended within `timeout_s`. With nothing in flight it still waits `timeout_s`: it
        is the loop's poll interval (an idle leader otherwise spun, hundreds of ticks a second)."""
        if not self._refs:
            time.sleep(timeout_s)
            return []
        done, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout_s)
        results = []
        for ref in done:
            run_id, block_index = self._refs.pop(ref)
            self._demand.pop(ref, None)
            try:
                result = ray.get(ref)
            except Exception as err:  # the task itself died (node lost, cancelled, ...)
                result = {"ok": False, "error": f"{type(err).__name__}: {err}", "checkpoint_path": None, "metrics": {}}
            results.append(
                JobResult(
                    run_id=run_id,
                    block_index=block_index,
                    ok=result["ok"],
                    checkpoint_path=result["checkpoint_path"],
                    metrics=result["metrics"],
                    error=result["error"],
                    node=result.get("node", ""),
                )
            )
        return results

    def cancel(self, run_id: str) -> None:
        for ref, (rid, _) in list(self._refs.items()):
            if rid == run_id:
                ray.cancel(ref, force=True)
                del self._refs[ref]
                self._demand.pop(ref, None)

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
