"""Sampling an assembled run: class-balanced samples, the grid PNG, samples.png. Whatever a caller leaves out comes
from the run's `sample` config, resolved here once."""

from __future__ import annotations

from pathlib import Path

import torch

from shared.assembly import load_assembled
from shared.config import Config
from shared.data import data_shape
from shared.generate import class_labels, generate, step_sigmas
from shared.images import grid_png
from shared.latent import decode_images


def sample_run(
    run_dir: Path,
    config: Config,
    *,
    num_per_class: int | None = None,
    num_steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int | None = None,
    weights: str | None = None,
    denoiser=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, labels) from an assembled run, class-balanced (class by class), as images (a latent run's decoded
    by its VAE); whatever is not given comes from the run's `sample` config. `denoiser`: the run's assembled model
    when the caller has loaded it already."""
    sample = config.sample
    pick = lambda value, default: default if value is None else value  # noqa: E731
    num_per_class, num_steps = pick(num_per_class, sample.num_per_class), pick(num_steps, sample.num_steps)
    cfg_scale, seed = pick(cfg_scale, sample.cfg_scale), pick(seed, sample.seed)
    if denoiser is None:
        denoiser, _ = load_assembled(run_dir, pick(weights, sample.weights))
    info, noise = data_shape(config), config.noise
    sigmas = step_sigmas(
        schedule=sample.schedule,
        num_steps=num_steps,
        sigma_min=noise.sigma_min,
        sigma_max=noise.sigma_max,
        rho=sample.rho,
        p_mean=noise.log_mean,
        p_std=noise.p_std,
    )
    labels = class_labels(info.num_classes, num_per_class)
    samples = generate(
        denoiser,
        labels=labels,
        image_shape=(info.channels, info.image_size, info.image_size),
        sigmas=sigmas,
        cfg_scale=cfg_scale,
        null_label=info.num_classes,
        sampler=sample.sampler,
        seed=seed,
    )
    return decode_images(config, samples), labels


def sample_grid_png(run_dir: Path, config: Config, **overrides) -> bytes:
    """`sample_run` as a PNG grid: one row per class."""
    samples, labels = sample_run(run_dir, config, **overrides)
    return grid_png(samples, len(labels) // max(1, data_shape(config).num_classes))


def write_samples_png(run_dir: Path, config: Config, path: Path | None = None, model=None) -> Path:
    path = path or run_dir / "samples.png"
    path.write_bytes(sample_grid_png(run_dir, config, denoiser=model))
    return path
