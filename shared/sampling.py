"""Samplers and step schedules. Every sampler is `(denoiser, z, sigmas, *, labels)`.

Euler (the paper's choice, "to match residual connections"):
    z_next = z + (sigma_next - sigma) * (z - D(z, sigma)) / sigma
(the paper's printed equation has the wrong sign; this is the official code's form).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from shared.noise import lognormal_cdf, lognormal_icdf

DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """num_steps + 1 descending sigmas, sigma_max ... sigma_min, then 0 (EDM eq. 5), float64."""
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64, device="cpu")
    inv_rho = 1.0 / rho
    sigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64, device="cpu")])


def equiprobable_sigmas(
    num_steps: int, sigma_min: float, sigma_max: float, p_mean: float, p_std: float
) -> torch.Tensor:
    """num_steps + 1 descending sigmas at equal steps of log-normal mass, then 0 (even steps per block), float64.

    Grid point i sits at mass fraction (n - i) / n, n = num_steps - 1, by the same expression as
    `shared.partition.equiprobable_boundaries`: where a fraction equals b / B the point is bit-identical to the
    boundary, so routing applies the plan's tie-break instead of a rounding accident.
    """
    q_min, q_max = lognormal_cdf(sigma_min, p_mean, p_std), lognormal_cdf(sigma_max, p_mean, p_std)
    if num_steps == 1:
        sigmas = [sigma_max]
    else:
        n = num_steps - 1
        inner = [lognormal_icdf(q_min + ((n - i) / n) * (q_max - q_min), p_mean, p_std) for i in range(1, n)]
        sigmas = [sigma_max, *inner, sigma_min]
    return torch.tensor([*sigmas, 0.0], dtype=torch.float64, device="cpu")  # schedules are host data


def euler_step(z: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return z + (sigma_next - sigma) * (z - denoised) / sigma


def _sigma_batch(z: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.full((z.shape[0],), sigma, dtype=z.dtype, device=z.device)


@torch.no_grad()
def sample_euler(denoiser: DenoiseFn, z: torch.Tensor, sigmas: torch.Tensor, *, labels: torch.Tensor) -> torch.Tensor:
    """Euler integration of the probability-flow ODE from sigmas[0] down to sigmas[-1] (= 0)."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        z = euler_step(z, denoiser(z, _sigma_batch(z, sigma), labels), sigma, sigma_next)
    return z


@torch.no_grad()
def sample_heun(denoiser: DenoiseFn, z: torch.Tensor, sigmas: torch.Tensor, *, labels: torch.Tensor) -> torch.Tensor:
    """Heun's 2nd-order method (EDM Alg. 1, deterministic); Euler on the last step to sigma = 0."""
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = (z - denoiser(z, _sigma_batch(z, sigma), labels)) / sigma
        z_next = z + (sigma_next - sigma) * d
        if sigma_next > 0:
            d_next = (z_next - denoiser(z_next, _sigma_batch(z, sigma_next), labels)) / sigma_next
            z_next = z + (sigma_next - sigma) * 0.5 * (d + d_next)
        z = z_next
    return z


SAMPLERS = {"euler": sample_euler, "heun": sample_heun}


def guided(denoiser: DenoiseFn, cfg_scale: float, null_label: int) -> DenoiseFn:
    """Classifier-free guidance: D_uncond + w * (D_cond - D_uncond), both in one batch. An unconditional model
    (no classes: the null label is 0 and every label is it) is never guided."""
    if cfg_scale == 1.0 or null_label == 0:
        return denoiser

    def denoise(z: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(labels, null_label)
        both = denoiser(torch.cat([z, z]), torch.cat([sigma, sigma]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + cfg_scale * (cond - uncond)

    return denoise
