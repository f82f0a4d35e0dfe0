"""The only module that talks to Ray: cluster connection, capacity, and block jobs in flight.

Each block job is a named, detached Ray actor (workers/ray_entry.py `job_actor`). A single-worker block's actor
(`BlockActor`) holds the block's CPUs/GPUs and trains it in its own process; Ray restarts it after a crash or a lost
node and it resumes from the block's newest checkpoint. A data-parallel block's actor (`BlockJobActor`, `num_cpus=0`)
runs the block's TorchTrainer.fit() to completion, and the Train workers it starts hold the resources. Detached, a
job outlives the coordinator that launched it: a coordinator that starts later `attach`es to it by name (namespace:
the service's key prefix; name: the block's Ray run name and attempt) and collects its result; a dispatcher that
steps down `forget`s its jobs without stopping them. Cancelling kills the actor, and with it what it trains.
"""

from __future__ import annotations

import os
import socket
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from coordinator.jobs import JobResult
from coordinator.reconcile import NOTHING, Resources
from shared.job import BlockJob
from workers.ray_entry import BlockJobActor, job_actor

# Variables a local cluster's processes must inherit (Ray Train reads its own from the driver's environment).
# AWS_*: credentials and endpoint of an S3-compatible checkpoint store, needed wherever a block trains.
_PROPAGATED_PREFIXES = ("RAY_TRAIN_", "OMP_NUM_THREADS", "AWS_")


HEAD_RESOURCE = "node:__internal_head__"  # the resource Ray gives the head node alone


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _on_head_node() -> str | NodeAffinitySchedulingStrategy:
    """Where Ray Train job actors go: the head node (soft: anywhere if it cannot take one). Ray Train V2 starts a run's
    controller on the node of the process that calls fit(), i.e. beside the job actor; left to the default
    scheduler, a zero-CPU actor may land on a worker node, and losing that node then fails *another* block's run
    too (its controller dies with it) instead of only the blocks whose workers trained there. The head node lives as
    long as the cluster; the coordinator's own node (compose: `dblocks serve --ray-node`) restarts with it, so it is
    no place for actors meant to outlive the coordinator."""
    head = next((n["NodeID"] for n in ray.nodes() if n["Alive"] and HEAD_RESOURCE in n["Resources"]), None)
    return NodeAffinitySchedulingStrategy(node_id=head, soft=True) if head else "DEFAULT"


def actor_name(job: BlockJob, attempt: int) -> str:
    return f"{job.name}:attempt{attempt}"


class RayDispatcher:
    def __init__(self, *, address: str | None, auth_mode: str = "disabled", namespace: str = "dblocks"):
        self.address = address
        self.auth_mode = auth_mode
        self.namespace = f"dblocks-jobs-{namespace}"  # block jobs of one service (key prefix) by name
        self._refs: dict[ray.ObjectRef, tuple[str, int]] = {}
        self._demand: dict[ray.ObjectRef, Resources] = {}
        self._actors: dict[ray.ObjectRef, ray.actor.ActorHandle] = {}
        self._actor_classes: dict[type[BlockJobActor], ray.actor.ActorClass] = {}
        self._placement: str | NodeAffinitySchedulingStrategy = "DEFAULT"

    def connect(self, num_cpus: int | None = None) -> None:
        os.environ["RAY_AUTH_MODE"] = self.auth_mode
        if ray.is_initialized():  # joined by this process already (a test, a benchmark): only place the actors
            self._placement = _on_head_node()
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
        self._placement = _on_head_node()

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

    def submit(
        self, job: BlockJob, storage_uri: str, demand: Resources, previews: bool = True, *, attempt: int = 1
    ) -> str:
        """Start `attempt` of a block as a detached actor (a leftover actor of the same name, whose result nobody
        collected, is stopped first: a new attempt starts afresh from the block's checkpoint)."""
        name = actor_name(job, attempt)
        self._kill_named(name)
        cls, options = job_actor(job)
        if cls not in self._actor_classes:
            # max_concurrency: the `result` calls of coordinators that died may still be waiting inside the actor;
            # the next coordinator's call must not queue behind them
            self._actor_classes[cls] = ray.remote(max_concurrency=64)(cls)
        placement = self._placement if cls.on_head_node else "DEFAULT"
        actor = (
            self._actor_classes[cls]
            .options(name=name, namespace=self.namespace, lifetime="detached", scheduling_strategy=placement, **options)
            .remote(job.to_dict(), storage_uri, previews)
        )
        self._track(actor, job, demand)
        return name

    def attach(self, job: BlockJob, demand: Resources, *, attempt: int) -> bool:
        """Take over `attempt` of a block still running under a detached actor (launched by a coordinator that
        died or stepped down); False if there is none."""
        try:
            actor = ray.get_actor(actor_name(job, attempt), namespace=self.namespace)
        except ValueError:
            return False
        self._track(actor, job, demand)
        return True

    def _track(self, actor, job: BlockJob, demand: Resources) -> None:
        ref = actor.result.remote()
        self._refs[ref] = (job.run_id, job.block.index)
        self._demand[ref] = demand
        self._actors[ref] = actor

    def stop(self, job: BlockJob, *, attempt: int) -> None:
        """Stop `attempt` of a block's detached job if it runs, tracked here or not."""
        self._kill_named(actor_name(job, attempt))

    def _kill_named(self, name: str) -> None:
        try:
            ray.kill(ray.get_actor(name, namespace=self.namespace), no_restart=True)
        except ValueError:  # none
            pass

    def _drop(self, ref, *, kill: bool) -> None:
        self._refs.pop(ref, None)
        self._demand.pop(ref, None)
        actor = self._actors.pop(ref, None)
        if kill and actor is not None:
            ray.kill(actor, no_restart=True)

    def forget(self) -> None:
        """Let go of every job without stopping it (stepping down: the next leader attaches to them)."""
        for ref in list(self._refs):
            self._drop(ref, kill=False)

    def wait(self, timeout_s: float) -> list[JobResult]:
        """Results of the jobs that ended within `timeout_s`. With nothing in flight it still waits `timeout_s`: it
        is the loop's poll interval (an idle leader otherwise spun, hundreds of ticks a second)."""
        if not self._refs:
            time.sleep(timeout_s)
            return []
        done, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout_s)
        results = []
        for ref in done:
            run_id, block_index = self._refs[ref]
            try:
                result = ray.get(ref)
            except Exception as err:  # the job itself died (its node lost, killed, ...)
                result = {"ok": False, "error": f"{type(err).__name__}: {err}", "checkpoint_path": None, "metrics": {}}
            self._drop(ref, kill=True)  # collected: the detached actor has nothing left to do
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
                self._drop(ref, kill=True)

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
