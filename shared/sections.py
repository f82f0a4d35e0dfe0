"""The sections every run config has, whatever its task: network, blocks, noise, training, resources, sampling.
(The data section is `shared/data/config.py`; a task's own section is in its folder; `shared/config.py` assembles
them into the run config.)"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.config_base import (
    MAX_BLOCKS,
    MAX_LAYERS,
    MAX_SAMPLE_STEPS,
    MAX_SAMPLES_PER_CLASS,
    MAX_SEED,
    MAX_STEPS,
    Section,
)
from shared.noise import lognormal_cdf


class ModelConfig(Section):
    num_layers: int = Field(6, ge=1, le=MAX_LAYERS, description="Transformer layers L of the whole network.")
    hidden_size: int = Field(64, ge=8, le=16_384, description="Token width d.")
    num_heads: int = Field(4, ge=1, le=256, description="Attention heads; must divide hidden_size.")
    patch_size: int = Field(4, ge=1, le=256, description="Patch side; must divide the image size.")
    mlp_ratio: float = Field(4.0, gt=0, le=16, description="MLP hidden width / d.")
    label_dropout: float = Field(0.1, ge=0, lt=1, description="Training label drop rate (for CFG).")
    output_conv: bool = Field(
        False,
        description="Image tasks: a 3x3 convolution after un-patchifying each block's output (identity at init), "
        "as U-ViT adds, so an output pixel sees the neighbouring patches; on the quickstart it did not remove the "
        "patch-corner speckles (docs/quality.md).",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class BlocksConfig(Section):
    num_blocks: int = Field(3, ge=1, le=MAX_BLOCKS, description="Number of blocks B (each trains alone).")
    overlap_gamma: float = Field(0.05, ge=0, le=1, description="Train-range widening per side, in log-sigma.")
    partition: Literal["equiprobable", "uniform_log"] = Field(
        "equiprobable", description="Noise partition: equal log-normal mass, or equal log-sigma width."
    )
    layers: list[Annotated[int, Field(ge=1, le=MAX_LAYERS)]] | None = Field(
        None, max_length=MAX_BLOCKS, description="Uneven layer split, e.g. [2, 4, 6] (each 1..256); default equal."
    )


class NoiseConfig(Section):
    """The noise axis. `edm`: z = y + sigma * eps (variance-exploding), EDM's preconditioning and loss weight.
    `flow`: flow matching, x_t = (1 - t) y + t eps with velocity prediction; through sigma = t / (1 - t)
    (ln sigma = logit t) every field below keeps its meaning: p_mean and p_std are the logit-normal's mean and std
    of logit t (SD3: 0 and 1), sigma_max 999 is t = 0.999, the partition's equal-mass boundaries are the
    logit-normal's quantiles and the overlap widens logit t (docs/method.md, "Flow matching")."""

    axis: Literal["edm", "flow"] = Field(
        "edm", description="edm: variance-exploding sigma, EDM preconditioning; flow: flow matching in t."
    )
    p_mean: float = Field(-1.2, ge=-20, le=20, description="Mean of ln(sigma) (flow: of logit t) in training.")
    p_std: float = Field(1.2, gt=0, le=20, description="Std of ln(sigma) (flow: of logit t) in training.")
    shift: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="Resolution shift s (SD3): sigma -> s * sigma, i.e. t -> s t / (1 + (s - 1) t); the same as "
        "adding ln(s) to p_mean, for training, partition and sampling alike.",
    )
    sigma_min: float = Field(0.002, ge=1e-8, le=1e4, description="Lowest noise level (flow: t = sigma/(1+sigma)).")
    sigma_max: float = Field(80.0, gt=0, le=1e6, description="Highest noise level (sampling starts here).")
    sigma_data: float = Field(0.5, ge=1e-6, le=1e4, description="Data standard deviation for EDM preconditioning.")
    flow_loss: Literal["velocity", "edm"] = Field(
        "velocity",
        description="flow: the training loss, velocity MSE ||v - v_pred||^2 (= ||D - y||^2 / t^2), or EDM's "
        "weighting of ||D - y||^2.",
    )

    @property
    def log_mean(self) -> float:
        """The mean of ln(sigma) training, partition and sampling use: p_mean shifted by ln(shift)."""
        return self.p_mean + math.log(self.shift)

    @model_validator(mode="after")
    def _ordered(self) -> NoiseConfig:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min {self.sigma_min} must be < sigma_max {self.sigma_max}")
        mass = lognormal_cdf(self.sigma_max, self.log_mean, self.p_std) - lognormal_cdf(
            self.sigma_min, self.log_mean, self.p_std
        )
        if not mass >= 1e-6:  # the partition divides this mass into B equal parts
            raise ValueError(
                f"p_mean {self.p_mean}, p_std {self.p_std}, shift {self.shift}: the training distribution puts "
                f"{mass:.3g} of its mass in [sigma_min, sigma_max] = [{self.sigma_min}, {self.sigma_max}]; it needs "
                "at least 1e-6"
            )
        if self.axis == "edm" and self.flow_loss != "velocity":
            raise ValueError("flow_loss applies to axis flow")
        return self


class TrainConfig(Section):
    mode: Literal["blockwise", "end_to_end"] = Field(
        "blockwise", description="blockwise = B independent blocks; end_to_end = one network, all layers."
    )
    steps_per_block: int = Field(
        2000, ge=1, le=MAX_STEPS, description="Optimiser steps each block (or the e2e net) takes."
    )
    block_step_scale: dict[int, Annotated[float, Field(gt=0, le=100)]] = Field(
        {},
        max_length=MAX_BLOCKS,
        description="Per-block multipliers of steps_per_block by block index, e.g. {1: 2.0}: block 1 trains twice "
        "as long; a block not named takes steps_per_block. Blocks are independent, so each may get the budget "
        "its noise range needs (docs/quality.md, the quickstart's speckles). Block-wise plans only, like "
        "blocks.layers: end_to_end trains steps_per_block.",
    )
    batch_size: int = Field(128, ge=1, le=65_536, description="Examples per step.")
    lr: float = Field(1e-3, gt=0, le=10, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=10, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, le=MAX_STEPS, description="Linear warm-up steps, then cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final lr as a fraction of lr.")
    grad_clip: float = Field(1.0, gt=0, le=1e6, description="Gradient norm clip.")
    ema_halflife_steps: float = Field(100.0, ge=0, le=MAX_STEPS, description="EMA half-life in steps; 0 disables EMA.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Run seed; each block's seed derives from (seed, block index).")
    checkpoint_every_steps: int = Field(500, ge=1, le=MAX_STEPS, description="Steps between resumable checkpoints.")
    log_every_steps: int = Field(50, ge=1, le=MAX_STEPS, description="Steps between metric reports.")
    max_failures: int = Field(
        2,
        ge=0,
        le=100,
        description="In-place restarts of a block's training (its job actor, or Ray Train's workers) after a crash "
        "or an error, each resuming from the block's newest checkpoint within the same attempt.",
    )
    max_attempts: int = Field(3, ge=1, le=100, description="Coordinator attempts per block before the run fails.")
    activation_checkpointing: bool = Field(False, description="Recompute layer activations in backward.")
    preview_every_steps: int = Field(
        500, ge=0, le=MAX_STEPS, description="Steps between per-block preview images; 0 = off."
    )
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = autocast forward/loss (use on GPU).")
    compile: bool = Field(
        False,
        description="torch.compile the block; its cost is the first step's, reported as compile_s and left out of "
        "steps/s (tens of seconds on CPU).",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default",
        description="torch.compile's mode: reduce-overhead replays CUDA graphs (small, launch-bound blocks on a GPU); "
        "max-autotune also tunes kernels (a longer compile).",
    )

    def steps_for(self, index: int) -> int:
        """Optimiser steps block `index` takes: steps_per_block times its scale (at least 1); end_to_end (the one
        network of the B = 1 plan) takes steps_per_block."""
        if self.mode == "end_to_end":
            return self.steps_per_block
        return max(1, round(self.steps_per_block * self.block_step_scale.get(index, 1.0)))


class BlockResources(Section):
    """One block's own resources; a field left out takes the `resources` default."""

    cpus: float | None = Field(None, gt=0, le=1024, description="CPUs per worker of this block.")
    gpus: float | None = Field(None, ge=0, le=64, description="GPUs per worker of this block.")
    memory_gb: float | None = Field(None, ge=0, le=65_536, description="Memory (GB) reserved per worker of this block.")


class ResourcesConfig(Section):
    cpus_per_block: float = Field(1.0, gt=0, le=1024, description="CPUs per block worker (also its torch threads).")
    gpus_per_block: float = Field(0.0, ge=0, le=64, description="GPUs per block worker.")
    memory_gb_per_block: float = Field(
        0.0,
        ge=0,
        le=65_536,
        description="Memory (GB) Ray reserves per block worker; 0 = reserve none (admission ignores memory).",
    )
    num_workers_per_block: int = Field(1, ge=1, le=1024, description="Data-parallel workers inside one block.")
    per_block: dict[int, BlockResources] = Field(
        {},
        max_length=MAX_BLOCKS,
        description="Per-block overrides by block index, e.g. {2: {gpus: 1, memory_gb: 40}}: bigger blocks on "
        "bigger machines.",
    )

    def for_block(self, index: int) -> WorkerResources:
        """What each worker of block `index` holds (the override, else the defaults)."""
        own = self.per_block.get(index, BlockResources())
        pick = lambda value, default: default if value is None else value  # noqa: E731
        return WorkerResources(
            cpus=pick(own.cpus, self.cpus_per_block),
            gpus=pick(own.gpus, self.gpus_per_block),
            memory_bytes=int(pick(own.memory_gb, self.memory_gb_per_block) * 1e9),
            num_workers=self.num_workers_per_block,
        )


class WorkerResources(BaseModel):
    """Resolved resources of one block: per worker, times `num_workers` data-parallel workers."""

    model_config = ConfigDict(frozen=True)
    cpus: float
    gpus: float
    memory_bytes: int
    num_workers: int


class SampleConfig(Section):
    num_steps: int = Field(50, ge=1, le=MAX_SAMPLE_STEPS, description="Sampler steps.")
    cfg_scale: float = Field(2.0, ge=0, le=100, description="Classifier-free guidance scale (1 = no guidance).")
    sampler: Literal["euler", "heun"] = Field("euler", description="ODE solver.")
    schedule: Literal["karras", "equiprobable"] = Field("karras", description="Step spacing.")
    rho: float = Field(7.0, gt=0, le=100, description="Karras schedule exponent.")
    num_per_class: int = Field(10, ge=1, le=MAX_SAMPLES_PER_CLASS, description="Samples per class in samples.png.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Sampling seed.")
    weights: Literal["ema", "raw"] = Field("ema", description="Which weights sample: EMA or raw.")
