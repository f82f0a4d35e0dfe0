"""A data-parallel block through Ray Train V2: a TorchTrainer per block, run to completion by its job actor
(workers/ray_entry.py `BlockJobActor`). Deterministic run name per block (`<run id>-block<i>`): constructing the
trainer again with the same (storage_path, name) makes Ray Train reload its checkpoint snapshot, and
`ray.train.get_checkpoint()` resumes from the latest checkpoint, after a worker crash (FailureConfig) and after a
coordinator restart alike. Imported only when such a block runs (Ray Train's import costs ~0.6 s).
"""

from __future__ import annotations

import socket
import time

import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from shared.checkpoint import load_training_state
from shared.job import BlockJob
from shared.storage import Storage
from workers.ray_block import CHECKPOINTS_KEPT, GaugeReporter, failed, this_node, train_here


class RayReporter(GaugeReporter):
    """Checkpoints go through `ray.train.report`, a barrier across the block's workers (rank 0 holds the checkpoint).
    Calling `ray.train.report` on every log step would wait on Train's controller each time (measured: ~30 %
    slower)."""

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)
        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report({**metrics, "node": self.node}, checkpoint=checkpoint)


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
