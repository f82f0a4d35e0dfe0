"""The plan of a run, a pure function of its config: noise boundaries, one BlockSpec per block, each block's
network and seed. Starts nothing; the coordinator, the worker and `dblocks plan` all read it from here."""

from __future__ import annotations

import hashlib

import torch

from shared.config import Config
from shared.model import NetSpec
from shared.partition import BlockSpec, plan_blocks
from shared.pretrained import describe, plan_init, source_layers
from shared.tasks import task_for


def net_spec(config: Config, num_layers: int) -> NetSpec:
    """The network of a block of `num_layers` layers under `config` (its task says the shape)."""
    return task_for(config).net_spec(config, num_layers)


def block_seed(run_seed: int, block_index: int) -> int:
    """Per-block seed from (run seed, block index): independent of scheduling order."""
    digest = hashlib.sha256(f"dblocks:{run_seed}:{block_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def boundaries(config: Config) -> list[float]:
    """B + 1 ascending noise levels on the task's axis (sigma for EDM tasks, t for masking)."""
    return task_for(config).boundaries(config)


def block_specs(config: Config) -> list[BlockSpec]:
    counts = config.layer_counts()
    return plan_blocks(boundaries(config), counts, config.blocks.overlap_gamma, widen=task_for(config).widen)


def plan_json(config: Config) -> dict:
    """The `dblocks plan --json` document."""
    blocks = [block_entry(config, spec) for spec in block_specs(config)]
    bounds = boundaries(config)
    plan = {"mode": config.train.mode, "boundaries": bounds, "blocks": blocks, "config_hash": config.hash()}
    if config.init.checkpoint is not None:
        plan["init"] = describe(config)
    # A task may name itself and its noise axis first (for text the sigma fields hold masking times t).
    return {**task_for(config).plan_header(bounds), **plan}


def block_entry(config: Config, spec: BlockSpec) -> dict:
    """A block as the plan and the manifest show it: its ranges, layers and parameter count (and, starting from a
    checkpoint, which source tensor each of its tensors takes)."""
    entry = {
        "index": spec.index,
        "sigma_lo": spec.sigma_lo,
        "sigma_hi": spec.sigma_hi,
        "train_sigma_lo": spec.train_sigma_lo,
        "train_sigma_hi": spec.train_sigma_hi,
        "layers": spec.layers,
        "steps": config.train.steps_for(spec.index),
        "num_params": block_params(config, spec.num_layers),
    }
    if config.init.checkpoint is not None:
        takes = plan_init(config, task_for(config), spec.layer_start, net_spec(config, spec.num_layers))
        layers = source_layers(config.init.format, spec.layer_start, spec.num_layers)
        entry["init"] = {"layers": layers, "tensors": {take.target: take.describe() for take in takes}}
    return entry


def layer_updates(config: Config) -> int:
    """Optimiser steps times layers, summed over the plan's blocks: the compute budget runs are compared at."""
    return sum(config.train.steps_for(spec.index) * spec.num_layers for spec in block_specs(config))


def block_params(config: Config, num_layers: int) -> int:
    """Parameters of a block of `num_layers` layers of this config's task, counted without allocating it."""
    with torch.device("meta"):
        return sum(p.numel() for p in task_for(config).network(net_spec(config, num_layers)).parameters())
