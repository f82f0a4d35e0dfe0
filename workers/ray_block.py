"""What a block needs to train in a Ray process, whichever way it is launched (workers/ray_entry.py): the block's
gauges, its node's name, its previews, and `train_here`, the loop with its progress file. Imports no Ray Train (a
block actor does not pay for it)."""

from __future__ import annotations

import socket

import ray
import torch

from shared.images import grid_png
from shared.job import BlockJob, history_dir, previews_dir, progress_path
from shared.latent import viewable
from shared.storage import Storage
from shared.tasks import task_for
from workers.reporting import ProgressFileReporter, TeeReporter
from workers.train_block import train_block

CHECKPOINTS_KEPT = 2  # a block's newest checkpoints kept on its storage (either way it trains)

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


def failed(err: Exception) -> dict:
    return {"ok": False, "error": f"{type(err).__name__}: {err}", "checkpoint_path": None, "metrics": {}}
