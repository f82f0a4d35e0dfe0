"""Pictures of what each block does: per-block previews, hand-over trajectories, loss curves, sigma-loss curves.

Functions returning tensors (previews, trajectories, loss curves) or writing PNG plots; randomness is passed in
as a generator on the images' device.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch

from shared.noise import loss_weight
from shared.partition import block_for_sigma
from shared.sampling import euler_step, guided


@torch.no_grad()
def block_preview(
    denoiser, images: torch.Tensor, labels: torch.Tensor, sigma_lo: float, sigma_hi: float, generator: torch.Generator
) -> torch.Tensor:
    """Rows: clean held-out images, then for sigma at the low end, middle and high end of the block's own
    interval: the noisy input and the block's denoised output. (7*N, C, H, W)."""
    sigmas = [sigma_lo, math.sqrt(sigma_lo * sigma_hi), sigma_hi]
    rows = [images]
    for sigma in sigmas:
        noisy = images + sigma * torch.randn(images.shape, generator=generator, device=images.device)
        denoised = denoiser(noisy, torch.full((len(images),), sigma, device=images.device), labels)
        rows += [noisy / math.sqrt(1 + sigma**2), denoised]  # noisy shown rescaled to about unit range
    return torch.cat(rows)


@torch.no_grad()
def handover_trajectory(
    denoiser,
    z: torch.Tensor,
    sigmas: torch.Tensor,
    labels: torch.Tensor,
    boundaries: list[float],
    cfg_scale: float,
    null_label: int,
) -> list[torch.Tensor]:
    """Euler sampling that records, per sample: the start noise, the denoised estimate at the last step of each
    block's segment (what that block hands over), and the final image. Returns one (N, C, H, W) per column."""
    fn = guided(denoiser, cfg_scale, null_label)
    columns = [z / sigmas[0]]
    values = sigmas.tolist()
    for i, (sigma, sigma_next) in enumerate(zip(values[:-1], values[1:])):
        denoised = fn(z, torch.full((len(z),), sigma, device=z.device), labels)
        last_of_block = sigma_next == 0 or block_for_sigma(boundaries, sigma_next) != block_for_sigma(boundaries, sigma)
        if last_of_block:
            columns.append(denoised)
        z = euler_step(z, denoised, sigma, sigma_next)
    columns.append(z)
    return columns


@torch.no_grad()
def sigma_loss_curve(
    denoiser,
    images: torch.Tensor,
    labels: torch.Tensor,
    sigmas: list[float],
    sigma_data: float,
    generator: torch.Generator,
) -> list[float]:
    """Held-out weighted denoising loss w(sigma) * mean ||D(y + sigma*eps) - y||^2 at each sigma."""
    out = []
    for sigma in sigmas:
        noisy = images + sigma * torch.randn(images.shape, generator=generator, device=images.device)
        s = torch.full((len(images),), sigma, device=images.device)
        err = (denoiser(noisy, s, labels) - images).pow(2).flatten(1).mean(1)
        out.append(float((loss_weight(s, sigma_data) * err).mean()))
    return out


@contextmanager
def figure(path: str | Path, *, figsize: tuple[float, float], ncols: int = 1, dpi: int = 110):
    """A headless matplotlib figure with one row of `ncols` axes, saved to `path` and closed on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
    try:
        yield fig, list(axes[0])
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def plot_loss_curves(
    histories: list[list[dict]], path: str | Path, *, scale: float = 1.0, ylabel: str = "training loss"
) -> None:
    """One axis per block: block losses are not comparable to one another. `scale` multiplies the loss (text:
    1 / ln 2, nats to bits)."""
    with figure(path, figsize=(3.2 * len(histories), 2.8), ncols=len(histories)) as (_, axes):
        for index, (ax, history) in enumerate(zip(axes, histories)):
            ax.plot([m["step"] for m in history], [m["loss"] * scale for m in history], lw=1)
            ax.set_title(f"block {index}")
            ax.set_xlabel("step")
            ax.set_yscale("log")
        axes[0].set_ylabel(ylabel)


def plot_bits_by_time(times: list[float], bits: list[float], boundaries: list[float], path: str | Path) -> None:
    """The held-out ELBO integrand against masking time t; its area is the BPC bound."""
    with figure(path, figsize=(5.5, 3.5)) as (_, (ax,)):
        ax.plot(times, bits, marker=".")
        for b in boundaries[1:-1]:
            ax.axvline(b, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("masking time t (dashed: block boundaries; block 0 owns t near 1)")
        ax.set_ylabel("held-out bits per character at t")


def plot_sigma_loss(
    sigmas: list[float], curves: dict[str, list[float]], boundaries: list[float], path: str | Path
) -> None:
    with figure(path, figsize=(5.5, 3.5)) as (_, (ax,)):
        for label, losses in curves.items():
            ax.plot(sigmas, losses, marker=".", label=label)
        for b in boundaries[1:-1]:
            ax.axvline(b, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sigma (dashed: block boundaries)")
        ax.set_ylabel("held-out weighted loss")
        ax.legend(fontsize=8)
