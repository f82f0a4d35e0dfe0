"""Class-conditional generation from any denoiser: schedule + CFG + sampler, with explicit randomness."""

from __future__ import annotations

import torch

from shared.sampling import SAMPLERS, equiprobable_sigmas, guided, karras_sigmas


def step_sigmas(
    *, schedule: str, num_steps: int, sigma_min: float, sigma_max: float, rho: float, p_mean: float, p_std: float
) -> torch.Tensor:
    if schedule == "karras":
        return karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    if schedule == "equiprobable":
        return equiprobable_sigmas(num_steps, sigma_min, sigma_max, p_mean, p_std)
    raise ValueError(f"unknown schedule {schedule!r}")


@torch.no_grad()
def generate(
    denoiser,
    *,
    labels: torch.Tensor,
    image_shape: tuple[int, int, int],
    sigmas: torch.Tensor,
    cfg_scale: float,
    null_label: int,
    sampler: str,
    seed: int,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Samples (N, C, H, W) in the data scale for the requested `labels`, from z = sigma_max * randn, on `device`.

    The start noise is drawn on the CPU from `seed`, one batch at a time (only one batch of noise is ever held), so a
    seed gives the same samples on any device.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    fn, solve = guided(denoiser, cfg_scale, null_label), SAMPLERS[sampler]
    chunks = []
    for i in range(0, len(labels), batch_size):
        batch = labels[i : i + batch_size]
        z = sigmas[0] * torch.randn((len(batch), *image_shape), generator=generator, device="cpu")
        chunks.append(solve(fn, z.to(device, torch.float32), sigmas, labels=batch.to(device)))
    return torch.cat(chunks)


def class_labels(num_classes: int, num_per_class: int) -> torch.Tensor:
    """0,0,...,1,1,... — one grid row per class; an unconditional model (no classes): one row of the null label."""
    if num_classes == 0:
        return torch.zeros(num_per_class, dtype=torch.long, device="cpu")
    return torch.arange(num_classes, device="cpu").repeat_interleave(num_per_class)
