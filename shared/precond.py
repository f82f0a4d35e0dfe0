"""Preconditioning around a network, and the weighted denoising loss. Every denoiser here has one form,

    D(z, sigma) = c_skip(sigma) * z + c_out(sigma) * F(c_in(sigma) * z, c_noise(sigma), labels),

on the variance-exploding state z = y + sigma * eps, so samplers, routing and the partition never learn which one
a block is. What differs is the network's own convention (`PRECONDITIONERS`):

- `edm`: Karras et al. 2022 (sigma_data scaling), this project's default;
- `flow`: flow matching, x_t = (1 - t) y + t eps, F predicts v = eps - y. With t = sigma / (1 + sigma),
  x_t = z / (1 + sigma) and D = x_t - t v: c_in = c_skip = 1 / (1 + sigma), c_out = -t, c_noise = t;
- `sit_velocity`: SiT's convention for the same path, time reversed (t' = 1 - t, 1 = data) and v' = y - eps,
  its timestep embedding fed t' unscaled: c_out = +t, c_noise = (1 - t) / 1000;
- `ddpm_eps`: DDPM's epsilon prediction on the linear-beta VP schedule (DiT): x = z / sqrt(1 + sigma^2) at the
  (fractional) timestep whose sigma it is, D = z - sigma * eps_hat: c_skip = 1, c_out = -sigma.

`c_noise` is what `shared.model.fourier_features` multiplies by 1000: DiT's timestep t in [0, 999] is c_noise t/1000.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.noise import ddpm_timestep, edm_scalings, loss_weight

PRECONDITIONERS = ("edm", "flow", "sit_velocity", "ddpm_eps")
AXIS = {"edm": "edm", "flow": "flow", "sit_velocity": "flow", "ddpm_eps": "edm"}  # the `noise.axis` each trains on
LOSSES = ("edm", "velocity")  # the weight on ||D - y||^2: EDM's lambda(sigma), or velocity MSE's 1 / t^2


def scalings(precond: str, sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of `precond` at noise levels `sigma` (any shape)."""
    if precond == "edm":
        return edm_scalings(sigma, sigma_data)
    if precond in ("flow", "sit_velocity"):
        t = sigma / (1 + sigma)
        c_in = 1 / (1 + sigma)
        if precond == "flow":
            return c_in, -t, c_in, t
        return c_in, t, c_in, (1 - t) / 1000
    if precond == "ddpm_eps":
        return torch.ones_like(sigma), -sigma, (1 + sigma**2).rsqrt(), ddpm_timestep(sigma) / 1000
    raise ValueError(f"precond {precond!r}: expected one of {PRECONDITIONERS}")


def denoising_weight(loss: str, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """The weight on ||D(z, sigma) - y||^2: EDM's lambda, or 1 / t^2 (= velocity MSE, since D - y = t (v - v_hat))."""
    if loss == "velocity":
        return ((1 + sigma) / sigma) ** 2
    return loss_weight(sigma, sigma_data)


class Denoiser(nn.Module):
    """Wraps a net F into the denoiser D of its convention (`precond`); the net knows nothing of sigma."""

    def __init__(self, net: nn.Module, sigma_data: float, precond: str = "edm"):
        super().__init__()
        if precond not in PRECONDITIONERS:
            raise ValueError(f"precond {precond!r}: expected one of {PRECONDITIONERS}")
        self.net = net
        self.sigma_data = sigma_data
        self.precond = precond

    def forward(self, z: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(z.dtype)
        c_skip, c_out, c_in, c_noise = scalings(self.precond, sigma, self.sigma_data)
        return c_skip * z + c_out * self.net(c_in * z, c_noise.flatten(), labels)


def denoising_loss(
    denoiser: nn.Module,
    clean: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    labels: torch.Tensor,
    sigma_data: float,
    loss: str = "edm",
) -> torch.Tensor:
    """Mean over the batch of w(sigma) * mean-over-pixels ||D(y + sigma*eps, sigma) - y||^2."""
    noisy = clean + sigma.reshape(-1, 1, 1, 1) * noise
    denoised = denoiser(noisy, sigma, labels)
    per_example = (denoised - clean).pow(2).flatten(1).mean(dim=1)
    return (denoising_weight(loss, sigma, sigma_data) * per_example).mean()
