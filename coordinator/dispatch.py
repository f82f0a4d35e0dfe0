"""The only module that talks to Ray: cluster connection, capacity, and block jobs in flight.

Each block job is a Ray task (`num_cpus=0`, so it holds no CPU itself) that runs one block's TorchTrainer.fit()
to completion; the Train workers it starts hold the block's CPUs/GPUs. Cancelling the task kills its trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from coordinator.reconcile import Demand
from workers.job import BlockJob
from workers.ray_entry import fit_block

# Variables a local cluster's processes must inherit (Ray Train reads its own from the driver's environment).
_PROPAGATED_PREFIXES = ("RAY_TRAIN_", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class Outcome:
    key: tuple[str, int]
    ok: bool
    checkpoint_path: str | None
    metrics: dict
    error: str | None
    node: str


class RayDispatcher:
    def __init__(self, *, address: str | None, auth_mode: str = "disabled"):
        self.address = address
        self.auth_mode = auth_mode
        self._refs: dict[ray.ObjectRef, tuple[str, int]] = {}
        self._demand: dict[ray.ObjectRef, Demand] = {}
        self._remote = ray.remote(num_cpus=0, max_retries=0)(fit_block)

    def connect(self, num_cpus: int | None = None) -> None:
        os.environ["RAY_AUTH_MODE"] = self.auth_mode
        if ray.is_initialized():
            return
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(_PROPAGATED_PREFIXES)}
        # "local": always start our own cluster; address=None would join whatever `ray start` left recorded
        # in /tmp/ray/ray_current_cluster, even a dead one.
        ray.init(address=self.address or "local", num_cpus=None if self.address else num_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env_vars} if env_vars else None)

    def capacity(self) -> Demand:
        total = ray.cluster_resources()
        return Demand(cpu=total.get("CPU", 0.0), gpu=total.get("GPU", 0.0))

    def in_flight(self, run_id: str) -> set[int]:
        return {index for rid, index in self._refs.values() if rid == run_id}

    def held(self) -> Demand:
        """Resources our in-flight block jobs hold, over every run."""
        return Demand(sum(d.cpu for d in self._demand.values()), sum(d.gpu for d in self._demand.values()))

    def ready(self) -> bool:
        return ray.is_initialized() and bool(ray.cluster_resources())

    def submit(self, job: BlockJob, storage_path: str, demand: Demand, preview_dir: str | None = None) -> str:
        ref = self._remote.remote(job.to_dict(), storage_path, preview_dir)
        self._refs[ref] = (job.run_id, job.block.index)
        self._demand[ref] = demand
        return job.name

    def wait(self, timeout_s: float) -> list[Outcome]:
        if not self._refs:
            return []
        done, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout_s)
        outcomes = []
        for ref in done:
            key = self._refs.pop(ref)
            self._demand.pop(ref, None)
            try:
                result = ray.get(ref)
            except Exception as err:  # the task itself died (node lost, cancelled, ...)
                result = {"ok": False, "error": f"{type(err).__name__}: {err}", "checkpoint_path": None,
                          "metrics": {}}
            outcomes.append(Outcome(key, result["ok"], result["checkpoint_path"], result["metrics"],
                                    result["error"], result.get("node", "")))
        return outcomes

    def cancel(self, run_id: str) -> None:
        for ref, (rid, _) in list(self._refs.items()):
            if rid == run_id:
                ray.cancel(ref, force=True)
                del self._refs[ref]
                self._demand.pop(ref, None)

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
