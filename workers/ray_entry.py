"""The one module the coordinator names (coordinator/dispatch.py): a block's job actor, in one of two kinds.

- **`BlockActor`** (a single-worker block, the common case): the detached job actor holds the block's CPUs/GPUs and
  trains it in its own process (`train_in_actor`). Checkpoints go to the run's storage (workers/checkpoints.py) and
  a restarted actor resumes from the newest; Ray restarts the actor after a crash or a lost node (`max_restarts`,
  the block's `train.max_failures`) and replays the coordinator's pending `result` call on it. No Ray Train run, so
  no controller and worker group to start, and no Ray Train import: the first step comes seconds sooner
  (docs/benchmarks.md, dispatch).
- **`BlockJobActor`** (a data-parallel block, `resources.num_workers_per_block` > 1): the job actor holds nothing
  and runs the block's Ray Train run to completion (workers/ray_train.py); its Train workers hold the resources.
"""

from __future__ import annotations

import threading
import time

import ray
import torch

from shared.job import BlockJob
from shared.storage import Storage
from workers.checkpoints import ActorCheckpoints
from workers.ray_block import CHECKPOINTS_KEPT, GaugeReporter, failed, this_node, train_here


class ActorReporter(GaugeReporter):
    """Checkpoints go to the run's storage (`ActorCheckpoints`); the last one's path is the block's result (a
    training always ends with a checkpoint, a resume after the last step too)."""

    def __init__(self, block_index: int, node: str, checkpoints: ActorCheckpoints):
        super().__init__(block_index, node)
        self.checkpoints, self.latest = checkpoints, None

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)
        if directory is not None:
            self.latest = self.checkpoints.save(directory, int(metrics["step"]))


def train_in_actor(job_dict: dict, storage_uri: str, previews: bool = True) -> dict:
    """Train a single-worker block in this process, from its newest checkpoint if it has one; what `fit_block`
    returns. An exception is retried here from the newest checkpoint up to `train.max_failures` times (as Ray Train
    retries a failed worker); a crash of the process is the actor's restart."""
    entered_at = time.time()
    try:
        job = BlockJob.from_dict(job_dict)
        storage = Storage.from_uri(storage_uri)
        checkpoints = ActorCheckpoints(storage, job, keep=CHECKPOINTS_KEPT)
        gpu = job.config.resources.for_block(job.block.index).gpus > 0 and torch.cuda.is_available()
        device = torch.device("cuda") if gpu else torch.device("cpu")
    except Exception as err:
        return failed(err)
    failures_left = job.config.train.max_failures
    while True:
        reporter = ActorReporter(job.block.index, this_node(), checkpoints)
        try:
            metrics = train_here(
                job, storage, reporter, resume=checkpoints.load(), device=device, rank=0, world_size=1,
                wrap=lambda m: m, previews=previews, entered_at=entered_at,
            )  # fmt: skip
            break
        except Exception as err:
            if failures_left == 0:
                return failed(err)
            failures_left -= 1
        finally:
            if gpu:
                torch.cuda.empty_cache()  # a finished block waits for its result to be collected: hold no cache
    metrics = {**metrics, "node": reporter.node}
    return {"ok": True, "error": None, "checkpoint_path": reporter.latest, "metrics": metrics, "node": reporter.node}


def fit_with_ray_train(job_dict: dict, storage_uri: str, previews: bool = True) -> dict:
    """A data-parallel block's training through Ray Train (workers/ray_train.py `fit_block`), imported here, in
    the one kind of actor that needs it."""
    from workers.ray_train import fit_block

    return fit_block(job_dict, storage_uri, previews)


# How long a finished block job waits for a coordinator to collect its result before it ends itself (a coordinator
# that is down longer finds no job and re-launches the block, which resumes from its final checkpoint at once). A
# job actor that trained the block itself holds the block's CPUs/GPUs meanwhile: it waits less.
UNCOLLECTED_RESULT_KEEP_S = 3600.0
UNCOLLECTED_ACTOR_KEEP_S = 600.0


class BlockJobActor:
    """One block's training, detached from the coordinator that launched it (a named Ray actor with
    `lifetime="detached"`, coordinator/dispatch.py): its constructor starts the training in a thread, so it goes on
    when that coordinator dies, and the next one finds it by name and waits on `result` instead of launching the
    block again. The coordinator that collects the result kills the actor. This one runs a Ray Train run
    (`fit_block`) and holds no resources itself."""

    train = staticmethod(fit_with_ray_train)
    keep_s = UNCOLLECTED_RESULT_KEEP_S
    on_head_node = True  # beside the Train controller it starts (coordinator/dispatch.py `_on_head_node`)

    def __init__(self, job_dict: dict, storage_uri: str, previews: bool = True):
        self._result: dict | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(job_dict, storage_uri, previews), name="train", daemon=True
        )
        self._thread.start()

    def _run(self, job_dict: dict, storage_uri: str, previews: bool) -> None:
        self._result = self.train(job_dict, storage_uri, previews)
        self._done.set()
        time.sleep(self.keep_s)  # nobody collected it: end, rather than hold a process forever
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def result(self) -> dict:
        """Blocks until the block's training ends; what `fit_block` / `train_in_actor` returned."""
        self._done.wait()
        return self._result


class BlockActor(BlockJobActor):
    """A single-worker block's job: the actor holds the block's resources and trains it itself (`train_in_actor`).
    Restarted by Ray after a crash or a lost node, it resumes from the block's newest checkpoint."""

    train = staticmethod(train_in_actor)
    keep_s = UNCOLLECTED_ACTOR_KEEP_S
    on_head_node = False  # wherever its resources are free


def job_actor(job: BlockJob) -> tuple[type[BlockJobActor], dict]:
    """The actor class a block's job runs as, and the Ray options that size it and restart it (the dispatcher adds
    name, namespace, lifetime and placement)."""
    resources = job.config.resources.for_block(job.block.index)
    if resources.num_workers > 1:
        return BlockJobActor, {"num_cpus": 0, "max_restarts": 0}
    options = {"num_cpus": resources.cpus, "max_restarts": job.config.train.max_failures, "max_task_retries": -1}
    if resources.gpus:
        options["num_gpus"] = resources.gpus
    if resources.memory_bytes:
        options["memory"] = resources.memory_bytes
    return BlockActor, options
