"""The one Ray-aware part of the workers: how one block trains under Ray, in one of two ways.

- **In its job actor** (a single-worker block, the common case): the block's detached job actor holds the block's
  CPUs/GPUs and trains it in its own process (`BlockActor`). Checkpoints go to the run's storage
  (workers/checkpoints.py) and a restarted actor resumes from the newest; Ray restarts the actor after a crash or a
  lost node (`max_restarts`, the block's `train.max_failures`) and replays the coordinator's pending `result` call
  on it. No Ray Train run, so no controller and worker group to start: the block's first step comes seconds sooner
  (docs/benchmarks.md, dispatch).
- **Through Ray Train** (a data-parallel block, `resources.num_workers_per_block` > 1): the job actor holds nothing
  (`BlockJobActor`) and runs a V2 TorchTrainer to completion; its workers hold the resources. Deterministic run name
  per block (`<run id>-block<i>`): constructing the trainer again with the same (storage_path, name) makes Ray Train
  reload its checkpoint snapshot, and `ray.train.get_checkpoint()` resumes from the latest checkpoint, after a worker
  crash (FailureConfig) and after a coordinator restart alike.
"""

from __future__ import annotations

import socket
import threading
import time

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from shared.checkpoint import load_training_state
from shared.images import grid_png
from shared.job import BlockJob, history_dir, previews_dir, progress_path
from shared.latent import viewable
from shared.storage import Storage
from shared.tasks import task_for
from workers.checkpoints import ActorCheckpoints
from workers.reporting import ProgressFileReporter, TeeReporter
from workers.train_block import train_block

CHECKPOINTS_KEPT = 2


# Worker-side metrics, exported by each node's Ray metrics agent with a `ray_` prefix
# (e.g. ray_dblocks_worker_loss). One label: the block index (bounded).
WORKER_GAUGES = {
    "step": ("dblocks_worker_step", "Latest training step of the block."),
    "loss": ("dblocks_worker_loss", "Training loss of the block (mean over the last window)."),
    "samples_per_s": ("dblocks_worker_samples_per_second", "Training throughput of the block."),
    "accuracy": (
        "dblocks_worker_accuracy",
        "Classification: accuracy of the block on its last training batch at its own noise levels.",
    ),
    "peak_memory_bytes": ("dblocks_worker_peak_memory_bytes", "Peak memory of the block's worker."),
    "checkpoint_s": ("dblocks_worker_checkpoint_seconds", "Duration of the block's last checkpoint."),
    "records_skipped": ("dblocks_worker_records_skipped", "Corrupt records skipped so far (data.skip_corrupt)."),
}


class GaugeReporter:
    """Metrics go to the block's gauges (`ray.util.metrics`, no synchronisation)."""

    def __init__(self, block_index: int, node: str):
        from ray.util.metrics import Gauge

        self.node = node
        self.tags = {"block": str(block_index)}
        self.gauges = {
            key: Gauge(name, description=doc, tag_keys=("block",)) for key, (name, doc) in WORKER_GAUGES.items()
        }

    def report(self, metrics: dict) -> None:
        for key, gauge in self.gauges.items():
            if metrics.get(key) is not None:
                gauge.set(float(metrics[key]), tags=self.tags)


class RayReporter(GaugeReporter):
    """Checkpoints go through `ray.train.report`, a barrier across the block's workers (rank 0 holds the checkpoint).
    Calling `ray.train.report` on every log step would wait on Train's controller each time (measured: ~30 %
    slower)."""

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)
        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report({**metrics, "node": self.node}, checkpoint=checkpoint)


class ActorReporter(GaugeReporter):
    """Checkpoints go to the run's storage (`ActorCheckpoints`); the last one's path is the block's result."""

    def __init__(self, block_index: int, node: str, checkpoints: ActorCheckpoints):
        super().__init__(block_index, node)
        self.checkpoints, self.latest = checkpoints, checkpoints.latest()

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)
        if directory is not None:
            self.latest = self.checkpoints.save(directory, int(metrics["step"]))


def this_node() -> str:
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def train_here(job: BlockJob, storage: Storage, reporter, *, resume, device, rank: int, world_size: int, wrap,
               previews: bool, entered_at: float) -> dict:  # fmt: skip
    """Train the block in this process (a Train worker or a job actor); rank 0 writes progress and previews."""
    torch.set_num_threads(max(1, int(job.config.resources.for_block(job.block.index).cpus)))
    data = task_for(job.config).train_batches(job.config, seed=job.seed, rank=rank, world_size=world_size)
    preview = None
    if rank == 0:
        progress = ProgressFileReporter(storage, progress_path(storage, job), history_dir(storage, job), reporter.node)
        reporter = TeeReporter(progress, reporter)
        preview = preview_writer(job, storage, device) if previews else None
    return train_block(
        job, data=data, reporter=reporter, resume=resume, device=device, rank=rank, wrap_model=wrap, preview=preview,
        entered_at=entered_at,
    )  # fmt: skip


def train_loop_per_worker(loop_config: dict) -> None:
    entered_at = time.time()
    job = BlockJob.from_dict(loop_config["job"])
    context = ray.train.get_context()
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_training_state(directory)
    world_size = context.get_world_size()
    train_here(
        job,
        Storage.from_uri(loop_config["storage_uri"]),
        RayReporter(job.block.index, this_node()),
        resume=resume,
        device=ray.train.torch.get_device(),
        rank=context.get_world_rank(),
        world_size=world_size,
        wrap=ray.train.torch.prepare_model if world_size > 1 else (lambda m: m),
        previews=bool(loop_config.get("previews")),
        entered_at=entered_at,
    )


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


def failed(err: Exception) -> dict:
    return {"ok": False, "error": f"{type(err).__name__}: {err}", "checkpoint_path": None, "metrics": {}}


def preview_writer(job: BlockJob, storage: Storage, device: torch.device):
    """Renders what this block alone can do: held-out examples noised into its own interval and denoised by it (a
    PNG grid for images, a .txt page for text)."""
    task = task_for(job.config)
    images, labels = task.preview_batch(job.config, 8)
    images, labels = images.to(device), (labels.to(device) if labels is not None else None)

    def write(step: int, denoiser) -> None:
        generator = torch.Generator(device=device).manual_seed(step)
        grid = task.preview(denoiser, images, labels, job.block.sigma_lo, job.block.sigma_hi, generator)
        if grid is None:  # the task has no picture of one block's work
            return
        name = f"block_{job.block.index}_step_{step}"
        if isinstance(grid, str):
            storage.write_text(f"{previews_dir(storage)}/{name}.txt", grid)
        else:
            grid = viewable(job.config, grid.cpu())  # a latent run's preview, decoded by its VAE where it is here
            storage.write_bytes(f"{previews_dir(storage)}/{name}.png", grid_png(grid, len(images)))

    return write


def make_trainer(job: BlockJob, *, storage_uri: str, previews: bool = True) -> TorchTrainer:
    """A TorchTrainer for one block; its Ray run and checkpoints live under `storage_uri` (a path or s3://)."""
    storage = Storage.from_uri(storage_uri)
    resources = job.config.resources.for_block(job.block.index)
    per_worker = {"CPU": resources.cpus}
    if resources.gpus:
        per_worker["GPU"] = resources.gpus
    if resources.memory_bytes:
        per_worker["memory"] = resources.memory_bytes
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.to_dict(), "storage_uri": storage.uri, "previews": previews},
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers, use_gpu=resources.gpus > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=job.name,
            **storage.ray_storage(),
            failure_config=FailureConfig(max_failures=job.config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            # No per-block worker runtime env: one that differs from the job's keeps Ray from handing the worker an
            # idle pooled process (benchmarks/dispatch_profile.py). Ray sets OMP_NUM_THREADS to the worker's CPUs
            # when the job does not, and the training function sets torch's threads itself.
        ),
    )


def fit_block(job_dict: dict, storage_uri: str, previews: bool = True) -> dict:
    """Run one block to completion; returns {"ok", "checkpoint_path", "metrics", "error"} (never raises: a job that
    cannot even be read fails like one whose training failed, instead of leaving its actor waiting forever)."""
    try:
        job = BlockJob.from_dict(job_dict)
        result = make_trainer(job, storage_uri=storage_uri, previews=previews).fit()
    except Exception as err:  # TrainingFailedError and friends: the coordinator decides what to do next
        return failed(err)
    if result.error is not None or result.checkpoint is None:
        return {
            "ok": False,
            "error": str(result.error or "no checkpoint"),
            "checkpoint_path": None,
            "metrics": result.metrics or {},
        }
    metrics = result.metrics or {}
    return {
        "ok": True,
        "error": None,
        "checkpoint_path": result.checkpoint.path,
        "metrics": metrics,
        "node": metrics.get("node", socket.gethostname()),
    }


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

    train = staticmethod(fit_block)
    keep_s = UNCOLLECTED_RESULT_KEEP_S

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
