"""The plan of a run: noise boundaries and one BlockSpec per block. Pure; starts nothing."""

from __future__ import annotations

from shared.config import Config
from shared.model import count_params
from shared.partition import (BlockSpec, equiprobable_boundaries, plan_blocks, split_layers,
                              uniform_log_boundaries)
from workers.job import net_spec


def effective_num_blocks(config: Config) -> int:
    """end_to_end is the B = 1 case: one network, all layers, the whole sigma range."""
    return 1 if config.train.mode == "end_to_end" else config.blocks.num_blocks


def boundaries(config: Config) -> list[float]:
    n, noise = effective_num_blocks(config), config.noise
    if config.blocks.partition == "uniform_log":
        return uniform_log_boundaries(n, noise.sigma_min, noise.sigma_max)
    return equiprobable_boundaries(n, noise.p_mean, noise.p_std, noise.sigma_min, noise.sigma_max)


def block_specs(config: Config) -> list[BlockSpec]:
    n = effective_num_blocks(config)
    layers = config.blocks.layers if n == config.blocks.num_blocks else None
    counts = split_layers(config.model.num_layers, n, layers)
    return plan_blocks(boundaries(config), counts, config.blocks.overlap_gamma)


def plan_json(config: Config) -> dict:
    """The `dblocks plan --json` document."""
    blocks = []
    for spec in block_specs(config):
        blocks.append({
            "index": spec.index, "sigma_lo": spec.sigma_lo, "sigma_hi": spec.sigma_hi,
            "train_sigma_lo": spec.train_sigma_lo, "train_sigma_hi": spec.train_sigma_hi,
            "layers": spec.layers, "num_params": count_params(net_spec(config, spec.num_layers)),
        })
    return {"mode": config.train.mode, "boundaries": boundaries(config), "blocks": blocks,
            "config_hash": config.hash()}
