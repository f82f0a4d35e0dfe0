"""Partition of the noise range and of the layers into blocks (DiffusionBlocks, Sec. 3).

Equi-probability: sigma_b = exp(p_mean + p_std * Phi^-1(q_min + (b/B)(q_max - q_min))), b = 0..B, so every
interval holds 1/B of the truncated log-normal mass. Boundaries are ascending; block 0 owns the HIGHEST-noise
interval (it holds the first layers, and runs first at inference).

Tie-break at an exact boundary: the lower-noise block owns its upper edge, i.e. sigma == boundaries[j] for
0 < j < B belongs to the block whose interval is [boundaries[j-1], boundaries[j]].
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from shared.noise import lognormal_cdf, lognormal_icdf


def equiprobable_boundaries(
    num_blocks: int, p_mean: float, p_std: float, sigma_min: float, sigma_max: float
) -> list[float]:
    """B+1 ascending boundaries with equal truncated log-normal mass between neighbours (float64)."""
    q_min = lognormal_cdf(sigma_min, p_mean, p_std)
    q_max = lognormal_cdf(sigma_max, p_mean, p_std)
    inner = [lognormal_icdf(q_min + (b / num_blocks) * (q_max - q_min), p_mean, p_std) for b in range(1, num_blocks)]
    return [sigma_min, *inner, sigma_max]


def uniform_log_boundaries(num_blocks: int, sigma_min: float, sigma_max: float) -> list[float]:
    """B+1 ascending boundaries equally spaced in ln(sigma) — the paper's ablation baseline."""
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    inner = [math.exp(lo + (b / num_blocks) * (hi - lo)) for b in range(1, num_blocks)]
    return [sigma_min, *inner, sigma_max]


def widen_linear(lo: float, hi: float, gamma: float, lo_min: float, hi_max: float) -> tuple[float, float]:
    """Controlled overlap on a linear axis (masking time t): extend each end by gamma * (hi - lo), clamp."""
    width = hi - lo
    return max(lo_min, lo - gamma * width), min(hi_max, hi + gamma * width)


def widen(sigma_lo: float, sigma_hi: float, gamma: float, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """Controlled overlap: extend each end by gamma * (ln hi - ln lo) in log-sigma, clamp to the range."""
    width = math.log(sigma_hi) - math.log(sigma_lo)
    lo = max(sigma_min, math.exp(math.log(sigma_lo) - gamma * width))
    hi = min(sigma_max, math.exp(math.log(sigma_hi) + gamma * width))
    return lo, hi


def split_layers(num_layers: int, num_blocks: int, layers: list[int] | None = None) -> list[int]:
    """Layers per block: the explicit split if given, else an equal split (paper Table 7: equal is best)."""
    if layers is not None:
        if len(layers) != num_blocks or sum(layers) != num_layers or min(layers) < 1:
            raise ValueError(f"layers {layers} must be {num_blocks} positive counts summing to {num_layers}")
        return list(layers)
    if num_layers % num_blocks:
        raise ValueError(f"num_layers {num_layers} is not divisible by num_blocks {num_blocks}")
    return [num_layers // num_blocks] * num_blocks


@dataclass(frozen=True, kw_only=True)
class BlockSpec:
    """What one block is: the interval it owns, the range it trains on, and which layers it holds."""

    index: int
    sigma_lo: float
    sigma_hi: float
    train_sigma_lo: float
    train_sigma_hi: float
    layer_start: int
    num_layers: int

    @property
    def layers(self) -> list[int]:
        return list(range(self.layer_start, self.layer_start + self.num_layers))

    def to_dict(self) -> dict:
        return asdict(self)


def plan_blocks(
    boundaries: list[float], layer_counts: list[int], gamma: float, *, widen: Callable = widen
) -> list[BlockSpec]:
    """Block specs, block 0 = first layers = highest-noise interval. `widen(lo, hi, gamma, min, max)` is the
    task's overlap rule (log sigma for EDM tasks, linear in t for masking); the sigma fields hold the task's
    noise level (sigma, or t)."""
    num_blocks = len(boundaries) - 1
    assert len(layer_counts) == num_blocks
    sigma_min, sigma_max = boundaries[0], boundaries[-1]
    specs, layer_start = [], 0
    for index in range(num_blocks):
        hi, lo = boundaries[num_blocks - index], boundaries[num_blocks - index - 1]
        train_lo, train_hi = widen(lo, hi, gamma, sigma_min, sigma_max)
        specs.append(
            BlockSpec(
                index=index,
                sigma_lo=lo,
                sigma_hi=hi,
                train_sigma_lo=train_lo,
                train_sigma_hi=train_hi,
                layer_start=layer_start,
                num_layers=layer_counts[index],
            )
        )
        layer_start += layer_counts[index]
    return specs


def block_for_sigma(boundaries: list[float], sigma: float) -> int:
    """Index of the block that owns `sigma` (tie-break in the module docstring); clamps outside the range."""
    num_blocks = len(boundaries) - 1
    interval = bisect.bisect_left(boundaries, sigma, lo=1, hi=num_blocks) - 1  # ascending interval index
    return num_blocks - 1 - interval
