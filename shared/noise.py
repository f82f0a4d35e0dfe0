"""EDM noise model (Karras et al. 2022), as DiffusionBlocks uses it.

z = y + sigma * eps; ln(sigma) ~ N(p_mean, p_std^2) truncated to [sigma_min, sigma_max];
D(z, sigma) = c_skip * z + c_out * F(c_in * z, c_noise); loss weight w = (sigma^2 + sd^2) / (sigma * sd)^2.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

_STD_NORMAL = NormalDist()


def edm_scalings(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (c_skip, c_out, c_in, c_noise) for noise levels `sigma` (any shape)."""
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1.0 / total.sqrt()
    c_noise = sigma.log() / 4.0
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma * sd)^2 — makes the effective target unit-variance."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def lognormal_cdf(sigma: float, p_mean: float, p_std: float) -> float:
    """q(sigma) = Phi((ln sigma - p_mean) / p_std), in float64."""
    return _STD_NORMAL.cdf((math.log(sigma) - p_mean) / p_std)


def lognormal_icdf(q: float, p_mean: float, p_std: float) -> float:
    """Inverse of `lognormal_cdf`, in float64."""
    return math.exp(p_mean + p_std * _STD_NORMAL.inv_cdf(q))


def sample_sigmas(
    num: int,
    sigma_lo: float,
    sigma_hi: float,
    p_mean: float,
    p_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw `num` sigmas from the log-normal truncated to [sigma_lo, sigma_hi] by inverse CDF.

    Computed in float64 (the tails matter: q(0.002) = 1.46e-5) and returned as float32, shape (num,), on the
    generator's device (a CUDA generator cannot draw into a CPU tensor).
    """
    q_lo = lognormal_cdf(sigma_lo, p_mean, p_std)
    q_hi = lognormal_cdf(sigma_hi, p_mean, p_std)
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(num, generator=generator, dtype=torch.float64, device=device)
    q = q_lo + u * (q_hi - q_lo)
    sigma = torch.exp(p_mean + p_std * torch.special.ndtri(q))
    return sigma.clamp(sigma_lo, sigma_hi).float()


def ddpm_sigmas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """sigma of each timestep of DDPM's linear-beta VP schedule (DiT's): sqrt((1 - abar_t) / abar_t), float64."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64, device="cpu")
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


_DDPM_LOG_SIGMAS = ddpm_sigmas().log()


def ddpm_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The fractional DDPM timestep (0..999) whose sigma is `sigma`: linear in log sigma between the discrete
    steps, clamped to the schedule's ends (sigma 0.01 .. 157); same shape and dtype as `sigma`."""
    table = _DDPM_LOG_SIGMAS.to(sigma.device)
    log_sigma = sigma.double().log().clamp(float(table[0]), float(table[-1]))
    high = torch.searchsorted(table, log_sigma.flatten()).clamp(1, len(table) - 1)
    low = high - 1
    frac = (log_sigma.flatten() - table[low]) / (table[high] - table[low])
    return (low + frac).reshape(sigma.shape).to(sigma.dtype)
