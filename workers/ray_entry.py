"""The one Ray-aware part of the workers: a Ray Train V2 TorchTrainer that trains one block.

Deterministic run name per block (`<run id>-block<i>`): constructing the trainer again with the same
(storage_path, name) makes Ray Train reload its checkpoint snapshot, and `ray.train.get_checkpoint()` below
resumes from the latest checkpoint — after a worker crash (FailureConfig) and after a coordinator restart alike.
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


class RayReporter:
    """Metrics go to the block's gauges (`ray.util.metrics`, no synchronisation); checkpoints go through
    `ray.train.report`, a barrier across the block's workers (rank 0 holds the checkpoint). Calling
    `ray.train.report` on every log step would wait on Train's controller each time (measured: ~30 % slower)."""

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

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)
        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report({**metrics, "node": self.node}, checkpoint=checkpoint)


def train_loop_per_worker(loop_config: dict) -> None:
    entered_at = time.time()
    job = BlockJob.from_dict(loop_config["job"])
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(job.config.resources.for_block(job.block.index).cpus)))
    device = ray.train.torch.get_device()
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_training_state(directory)
    data = task_for(job.config).train_batches(
        job.config, seed=job.seed, rank=context.get_world_rank(), world_size=context.get_world_size()
    )
    wrap = ray.train.torch.prepare_model if context.get_world_size() > 1 else (lambda m: m)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    reporter = RayReporter(job.block.index, node)
    storage = Storage.from_uri(loop_config["storage_uri"])
    if context.get_world_rank() == 0:
        progress = ProgressFileReporter(storage, progress_path(storage, job), history_dir(storage, job), node=node)
        reporter = TeeReporter(progress, reporter)
    preview = None
    if loop_config.get("previews") and context.get_world_rank() == 0:
        preview = preview_writer(job, storage, device)
    train_block(
        job,
        data=data,
        reporter=reporter,
        resume=resume,
        device=device,
        rank=context.get_world_rank(),
        wrap_model=wrap,
        preview=preview,
        entered_at=entered_at,
    )


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
        return {"ok": False, "error": f"{type(err).__name__}: {err}", "checkpoint_path": None, "metrics": {}}
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
# that is down longer finds no job and re-launches the block, which resumes from its final checkpoint at once).
UNCOLLECTED_RESULT_KEEP_S = 3600.0


class BlockJobActor:
    """One block's training, detached from the coordinator that launched it (a named Ray actor with
    `lifetime="detached"`, coordinator/dispatch.py): its constructor starts `fit_block` in a thread, so the
    Train run it owns goes on when that coordinator dies, and the next one finds it by name and waits on
    `result` instead of launching the block again. The coordinator that collects the result kills the actor."""

    def __init__(self, job_dict: dict, storage_uri: str, previews: bool = True):
        self._result: dict | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(job_dict, storage_uri, previews), name="fit", daemon=True
        )
        self._thread.start()

    def _run(self, job_dict: dict, storage_uri: str, previews: bool) -> None:
        self._result = fit_block(job_dict, storage_uri, previews)
        self._done.set()
        time.sleep(UNCOLLECTED_RESULT_KEEP_S)  # nobody collected it: end, rather than hold a process forever
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def result(self) -> dict:
        """Blocks until the block's training ends; what `fit_block` returned."""
        self._done.wait()
        return self._result
