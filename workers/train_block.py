"""Train one block as a denoiser for its own noise interval. No Ray here: the loop runs anywhere.

Phases: build (only this block) -> restore (if resuming) -> loop (sample batch, sigmas in the block's widened
range, weighted EDM loss, clip, AdamW, EMA) -> periodic reports and checkpoints -> final checkpoint.
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from shared.checkpoint import save_training_state
from shared.data import Batches, MemoryBatches
from shared.job import BlockJob
from shared.tasks import task_for
from workers.reporting import Reporter


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr_ratio * lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_decay(step: int, halflife_steps: float) -> float:
    """Per-step EMA decay with the given half-life, warmed up so early steps do not freeze the average."""
    if halflife_steps <= 0:
        return 0.0
    return min(0.5 ** (1.0 / halflife_steps), (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def build_block(job: BlockJob) -> nn.Module:
    """This block's net (of its task) and nothing else, initialised from the block's own seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        task = task_for(job.config)
        return task.network(job.net, activation_checkpointing=job.config.train.activation_checkpointing)


def train_block(
    job: BlockJob,
    *,
    data: Batches | tuple[torch.Tensor, torch.Tensor],
    reporter: Reporter,
    resume: dict | None = None,
    device: torch.device = torch.device("cpu"),
    rank: int = 0,
    wrap_model: Callable[[nn.Module], nn.Module] = lambda m: m,
    preview: Callable[[int, nn.Module], None] | None = None,
    entered_at: float | None = None,
) -> dict:
    """Train `job.block` for `job.steps` steps (from `resume["step"]` if given); return final metrics.

    `entered_at`: wall clock when the worker entered its entry point, before loading data (dispatch timing)."""
    cfg, noise, spec, total = job.config.train, job.config.noise, job.block, job.steps
    batches = (data if hasattr(data, "next_batch") else MemoryBatches(*data)).to(device)
    task = task_for(job.config)

    # Build: only this block's parameters exist in this process.
    net = build_block(job).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    generator = torch.Generator(device=device).manual_seed(job.seed + rank)
    start_step = 0

    # Restore: weights, EMA, optimiser moments and the data generator, so a resumed run continues exactly.
    if resume is not None:
        net.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["rng_state"])
        start_step = resume["step"]
        batches.load_state_dict(resume.get("data_state"))

    model = wrap_model(task.denoiser(net, noise.sigma_data))
    if cfg.compile:
        model = torch.compile(model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    meta = {
        "block": spec.to_dict(),
        "net": job.net.to_dict(),
        "task": job.config.task,
        "task_options": task.options,
        "sigma_data": noise.sigma_data,
        "run_id": job.run_id,
        "config_hash": job.config.hash(),
    }
    # Until the first report, the metrics are those saved with the checkpoint we resumed from (if any).
    metrics: dict = {
        **(resume or {}).get("metrics", {}),
        "step": start_step,
        "block": spec.index,
        "resumed_from_step": start_step,
    }
    loss_sum, loss_count, window_start, window_step = 0.0, 0, time.perf_counter(), start_step
    checkpoint_s, loop_start, started_at, first_step_at = 0.0, time.perf_counter(), time.time(), None

    def checkpoint(step: int) -> None:
        with tempfile.TemporaryDirectory(prefix="dblocks-") as tmp:
            if rank == 0:
                save_training_state(
                    tmp,
                    model=net.state_dict(),
                    ema=ema.state_dict(),
                    optimizer=optimizer.state_dict(),
                    rng_state=generator.get_state(),
                    data_state=batches.state_dict(),
                    step=step,
                    meta=meta,
                    metrics=metrics,
                )
            reporter.checkpoint(metrics, tmp if rank == 0 else None)

    for step in range(start_step, total):
        # One step: batch, sigmas inside this block's widened range, the task's weighted loss.
        for group in optimizer.param_groups:
            group["lr"] = lr_at(
                step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=total, min_lr_ratio=cfg.min_lr_ratio
            )
        clean, batch_labels = batches.next_batch(cfg.batch_size, generator)
        sigma = task.sample_noise(cfg.batch_size, spec.train_sigma_lo, spec.train_sigma_hi, job.config, generator).to(
            device
        )
        with autocast:
            loss = task.loss(
                model,
                clean,
                batch_labels,
                sigma,
                sigma_data=noise.sigma_data,
                generator=generator,
                label_dropout=job.config.model.label_dropout,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        ema_update(ema, net, ema_decay(step, cfg.ema_halflife_steps))
        loss_sum, loss_count = loss_sum + loss.detach(), loss_count + 1
        if first_step_at is None:
            first_step_at = time.time()

        # Report every log_every_steps (one host sync per window), checkpoint every checkpoint_every_steps.
        done = step + 1
        last = done == total
        save_now = done % cfg.checkpoint_every_steps == 0 or last
        if save_now or done % cfg.log_every_steps == 0:
            elapsed = time.perf_counter() - window_start
            metrics = {
                "step": done,
                "block": spec.index,
                "loss": float(loss_sum) / loss_count,
                "grad_norm": float(grad_norm),
                "lr": optimizer.param_groups[0]["lr"],
                "steps_per_s": (done - window_step) / elapsed,
                "samples_per_s": (done - window_step) * cfg.batch_size / elapsed,
                "peak_memory_bytes": peak_memory_bytes(device),
                "resumed_from_step": start_step,
                "records_skipped": getattr(batches, "skipped", 0),
                "checkpoint_s": checkpoint_s,
                "train_s": time.perf_counter() - loop_start,
                "started_at": started_at,
                "entered_at": entered_at or started_at,
                "first_step_at": first_step_at,
            }
            if task.progress_metric is not None:  # e.g. classification accuracy; its own generator
                with torch.no_grad(), autocast:
                    progress_generator = torch.Generator(device=device).manual_seed(job.seed + done)
                    metrics[task.progress_metric] = task.progress(model, clean, batch_labels, sigma, progress_generator)
            if save_now:
                started = time.perf_counter()
                checkpoint(done)
                checkpoint_s = time.perf_counter() - started
            else:
                reporter.report(metrics)
            loss_sum, loss_count, window_start, window_step = 0.0, 0, time.perf_counter(), done
        if (
            preview is not None
            and rank == 0
            and cfg.preview_every_steps
            and (done % cfg.preview_every_steps == 0 or last)
        ):
            preview(done, task.denoiser(ema, noise.sigma_data).eval())

    if start_step >= total:  # resumed after the last step: still leave a final checkpoint
        checkpoint(start_step)
    return metrics
