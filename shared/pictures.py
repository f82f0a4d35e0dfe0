"""The pictures of a finished run: trajectory.png, loss_curves.png, sigma_loss.png (and the previews the
workers wrote while training). Written at assembly; `dblocks report` puts them in one HTML page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from shared.assembly import load_assembled
from shared.config import Config
from shared.data import data_shape, load_split
from shared.generate import step_sigmas
from shared.images import save_grid
from shared.job import HISTORY_PART, BlockJob, history_dir, legacy_history_path
from shared.latent import decode_images
from shared.plan import block_specs
from shared.storage import Storage
from shared.visualize import handover_trajectory, plot_loss_curves, plot_sigma_loss, sigma_loss_curve

SIGMA_GRID = 24


def block_history(storage: Storage, job: BlockJob) -> list[dict]:
    """A block's reported metrics, by step (the last report wins where a restart repeated steps)."""
    directory, legacy = history_dir(storage, job), legacy_history_path(storage, job)
    paths = [legacy] if storage.exists(legacy) else []
    paths += [f"{directory}/{n}" for n in sorted(storage.list_names(directory)) if HISTORY_PART.fullmatch(n)]
    by_step = {}
    for path in paths:
        for line in storage.read_text(path).splitlines():
            metrics = json.loads(line)
            by_step[metrics["step"]] = metrics
    return [by_step[s] for s in sorted(by_step)]


def write_trajectory(run_dir: Path, config: Config, manifest: dict, num_samples: int = 6, denoiser=None) -> Path:
    if denoiser is None:
        denoiser, _ = load_assembled(run_dir, config.sample.weights)
    info, noise, s = data_shape(config), config.noise, config.sample
    sigmas = step_sigmas(
        schedule=s.schedule,
        num_steps=s.num_steps,
        sigma_min=noise.sigma_min,
        sigma_max=noise.sigma_max,
        rho=s.rho,
        p_mean=noise.log_mean,
        p_std=noise.p_std,
    )
    labels = torch.arange(num_samples, device="cpu") % max(1, info.num_classes)
    g = torch.Generator(device="cpu").manual_seed(s.seed)
    shape = (num_samples, info.channels, info.image_size, info.image_size)
    z = sigmas[0] * torch.randn(shape, generator=g, device="cpu")
    columns = handover_trajectory(denoiser, z, sigmas, labels, manifest["boundaries"], s.cfg_scale, info.num_classes)
    columns = [decode_images(config, column) for column in columns]  # a latent run's columns, as images
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # row per sample: noise, block 0 ... block B-1, final
    path = run_dir / "trajectory.png"
    save_grid(grid, len(columns), path, scale=3)
    return path


def write_sigma_loss(
    run_dir: Path,
    config: Config,
    manifest: dict,
    baselines: dict[str, Path] | None = None,
    num_images: int = 256,
    denoiser=None,
) -> Path:
    d, noise = config.data, config.noise
    images, labels = load_split(d, "test", limit=num_images)
    sigmas = [
        math.exp(
            math.log(noise.sigma_min) + i * (math.log(noise.sigma_max) - math.log(noise.sigma_min)) / (SIGMA_GRID - 1)
        )
        for i in range(SIGMA_GRID)
    ]
    curves = {}
    for label, directory in {"this run": run_dir, **(baselines or {})}.items():
        model = (
            denoiser
            if (directory == run_dir and denoiser is not None)
            else load_assembled(directory, config.sample.weights)[0]
        )
        curves[label] = sigma_loss_curve(
            model, images, labels, sigmas, noise.sigma_data, torch.Generator(device="cpu").manual_seed(0)
        )
    path = run_dir / "sigma_loss.png"
    plot_sigma_loss(sigmas, curves, manifest["boundaries"], path)
    (run_dir / "sigma_loss.json").write_text(json.dumps({"sigmas": sigmas, "curves": curves}))
    return path


def write_loss_curves(
    run_dir: Path, config: Config, storage: Storage, run_id: str, blocks, *, scale: float = 1.0, ylabel: str = ""
) -> Path | None:
    histories = []
    for spec, record in zip(block_specs(config), blocks):
        job = BlockJob(run_id=run_id, config=config, block=spec, generation=record.generation)
        histories.append(block_history(storage, job))
    if not all(histories):
        return None
    path = run_dir / "loss_curves.png"
    plot_loss_curves(histories, path, scale=scale, ylabel=ylabel or "training loss")
    return path


def write_pictures(
    run_dir: Path, config: Config, manifest: dict, storage: Storage, run_id: str, blocks, denoiser=None
) -> None:
    """All pictures of a finished run; `denoiser`: its assembled model, if the caller has loaded it already."""
    write_trajectory(run_dir, config, manifest, denoiser=denoiser)
    write_sigma_loss(run_dir, config, manifest, denoiser=denoiser)
    write_loss_curves(run_dir, config, storage, run_id, blocks)
