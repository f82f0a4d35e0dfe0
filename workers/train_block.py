"""Train one block as a denoiser for its own noise interval. No Ray here: the loop runs anywhere.

Phases, as `train_block` reads: build (only this block: `BlockState.build`) -> restore (if resuming) -> loop
(`train_step`: a batch, noise levels in the block's widened range, the task's weighted loss, clip, AdamW, EMA) ->
reports per window (`Window`), checkpoints (`save_checkpoint`), previews -> a final checkpoint.
"""

from __future__ import annotations

import copy
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from shared.checkpoint import save_training_state
from shared.data import Batches, MemoryBatches
from shared.job import BlockJob
from shared.pretrained import block_init_state
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


def build_block(job: BlockJob, *, fresh: bool = True) -> nn.Module:
    """This block's net (of its task) and nothing else, initialised from the block's own seed, or from its slice of
    the trained network the run starts from (`init.checkpoint`: only this block's tensors are read)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        task = task_for(job.config)
        net = task.network(job.net, activation_checkpointing=job.config.train.activation_checkpointing)
    if fresh and job.config.init.checkpoint is not None:  # (a resumed block loads its own checkpoint instead)
        net.load_state_dict(block_init_state(job.config, task, job.block.layer_start, job.net), strict=True)
    return net


@dataclass
class BlockState:
    """Everything a checkpoint holds besides the data stream's position: the block's weights, their EMA, the
    optimiser moments, the generator every random draw comes from, and the step reached."""

    net: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0

    @classmethod
    def build(cls, job: BlockJob, device: torch.device, rank: int, *, fresh: bool = True) -> BlockState:
        """Only this block's parameters exist in this process (`fresh`: not about to be restored)."""
        cfg = job.config.train
        net = build_block(job, fresh=fresh).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        generator = torch.Generator(device=device).manual_seed(job.seed + rank)
        return cls(net, copy.deepcopy(net).requires_grad_(False), optimizer, generator)

    def restore(self, resume: dict, batches: Batches) -> None:
        """Weights, EMA, optimiser moments, the generator and the data position: a resumed run continues exactly."""
        self.net.load_state_dict(resume["model"])
        self.ema.load_state_dict(resume["ema"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.generator.set_state(resume["rng_state"])
        self.step = resume["step"]
        batches.load_state_dict(resume.get("data_state"))


def block_meta(job: BlockJob, task) -> dict:
    """What makes a block file self-describing: its range, net, task and options, scale, run and config."""
    return {
        "block": job.block.to_dict(),
        "net": job.net.to_dict(),
        "task": job.config.task,
        "task_options": task.options,
        "sigma_data": job.config.noise.sigma_data,
        "run_id": job.run_id,
        "config_hash": job.config.hash(),
    }


def save_checkpoint(state: BlockState, batches: Batches, meta: dict, metrics: dict, reporter: Reporter, rank: int):
    """A resumable checkpoint at `metrics["step"]`, written by rank 0 and reported by every rank (a barrier)."""
    with tempfile.TemporaryDirectory(prefix="dblocks-") as tmp:
        if rank == 0:
            save_training_state(
                tmp,
                model=state.net.state_dict(),
                ema=state.ema.state_dict(),
                optimizer=state.optimizer.state_dict(),
                rng_state=state.generator.get_state(),
                data_state=batches.state_dict(),
                step=metrics["step"],
                meta=meta,
                metrics=metrics,
            )
        reporter.checkpoint(metrics, tmp if rank == 0 else None)


def train_step(job: BlockJob, task, model: nn.Module, state: BlockState, batches: Batches, autocast) -> tuple:
    """One step at `state.step`: a batch, noise levels inside the block's widened range, the task's weighted loss,
    clip, AdamW, EMA. Returns (loss, grad_norm, (inputs, labels, noise levels))."""
    cfg, spec = job.config.train, job.block
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(
            state.step, lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=job.steps, min_lr_ratio=cfg.min_lr_ratio
        )
    clean, labels = batches.next_batch(cfg.batch_size, state.generator)
    sigma = task.sample_noise(cfg.batch_size, spec.train_sigma_lo, spec.train_sigma_hi, job.config, state.generator)
    sigma = sigma.to(clean.device)
    with autocast:
        loss = task.loss(
            model,
            clean,
            labels,
            sigma,
            sigma_data=job.config.noise.sigma_data,
            generator=state.generator,
            label_dropout=job.config.model.label_dropout,
        )
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(state.net.parameters(), cfg.grad_clip)
    state.optimizer.step()
    ema_update(state.ema, state.net, ema_decay(state.step, cfg.ema_halflife_steps))
    state.step += 1
    return loss, grad_norm, (clean, labels, sigma)


@dataclass
class Window:
    """The steps since the last report: their summed loss (on the device: one host sync per window) and timing."""

    step: int  # the step the window started at
    started: float = field(default_factory=time.perf_counter)
    loss_sum: torch.Tensor | float = 0.0
    count: int = 0

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum, self.count = self.loss_sum + loss.detach(), self.count + 1

    def loss(self) -> float:
        return float(self.loss_sum) / self.count

    def steps_per_s(self, done: int) -> float:
        return (done - self.step) / (time.perf_counter() - self.started)


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
    cfg, noise, total = job.config.train, job.config.noise, job.steps
    batches = (data if hasattr(data, "next_batch") else MemoryBatches(*data)).to(device)
    task = task_for(job.config)

    # Build, then restore if resuming.
    state = BlockState.build(job, device, rank, fresh=resume is None)
    if resume is not None:
        state.restore(resume, batches)
    start_step, meta = state.step, block_meta(job, task)
    model = wrap_model(task.denoiser(state.net, noise.sigma_data))
    if cfg.compile:
        model = torch.compile(model, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    # Until the first report, the metrics are those saved with the checkpoint we resumed from (if any).
    metrics: dict = {
        **(resume or {}).get("metrics", {}),
        "step": start_step,
        "block": job.block.index,
        "resumed_from_step": start_step,
    }
    window, checkpoint_s = Window(start_step), 0.0
    loop_start, started_at, first_step_at = time.perf_counter(), time.time(), None

    # Loop: a step; a report every log_every_steps, a checkpoint every checkpoint_every_steps; previews.
    while state.step < total:
        loss, grad_norm, batch = train_step(job, task, model, state, batches, autocast)
        window.add(loss)
        if first_step_at is None and cfg.compile:  # the compile's cost, left out of the first window's rate
            metrics["compile_s"] = time.perf_counter() - window.started
            window.started, window.step = time.perf_counter(), state.step
        first_step_at = first_step_at or time.time()
        done = state.step
        save_now = done % cfg.checkpoint_every_steps == 0 or done == total
        if save_now or done % cfg.log_every_steps == 0:
            timing = {"checkpoint_s": checkpoint_s, "train_s": time.perf_counter() - loop_start,
                      "started_at": started_at, "entered_at": entered_at or started_at, "first_step_at": first_step_at,
                      **({"compile_s": metrics["compile_s"]} if "compile_s" in metrics else {})}  # fmt: skip
            metrics = window_metrics(job, state, window, done, float(grad_norm), batches, device, start_step, timing)
            if task.progress_metric is not None:  # e.g. classification accuracy; its own generator
                metrics[task.progress_metric] = progress(job, task, model, batch, done, autocast, device)
            if save_now:
                saving = time.perf_counter()
                save_checkpoint(state, batches, meta, metrics, reporter, rank)
                checkpoint_s = time.perf_counter() - saving
            else:
                reporter.report(metrics)
            window = Window(done)
        if preview is not None and rank == 0 and previews_at(done, total, cfg.preview_every_steps):
            preview(done, task.denoiser(state.ema, noise.sigma_data).eval())

    if start_step >= total:  # resumed after the last step: still leave a final checkpoint
        save_checkpoint(state, batches, meta, metrics, reporter, rank)
    return metrics


def window_metrics(job, state, window: Window, done: int, grad_norm: float, batches, device, start_step: int,
                   timing: dict) -> dict:  # fmt: skip
    """What a report says of the steps since the last one, beside `timing` (the block's clocks)."""
    steps_per_s = window.steps_per_s(done)
    return {
        "step": done,
        "block": job.block.index,
        "loss": window.loss(),
        "grad_norm": grad_norm,
        "lr": state.optimizer.param_groups[0]["lr"],
        "steps_per_s": steps_per_s,
        "samples_per_s": steps_per_s * job.config.train.batch_size,
        "peak_memory_bytes": peak_memory_bytes(device),
        "resumed_from_step": start_step,
        "records_skipped": getattr(batches, "skipped", 0),
        **timing,
    }


def progress(job: BlockJob, task, model: nn.Module, batch: tuple, done: int, autocast, device) -> float:
    """The task's live metric on this step's batch, from a generator of its own (the training draws are untouched)."""
    with torch.no_grad(), autocast:
        generator = torch.Generator(device=device).manual_seed(job.seed + done)
        return task.progress(model, *batch, generator)


def previews_at(done: int, total: int, every_steps: int) -> bool:
    return bool(every_steps) and (done % every_steps == 0 or done == total)
