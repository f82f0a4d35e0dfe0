"""EDM preconditioning around a network, and the weighted denoising loss.

D(z, sigma) = c_skip(sigma) * z + c_out(sigma) * F(c_in(sigma) * z, c_noise(sigma), labels).
"""

from __future__ import annotations

import torch
from torch import nn

from shared.noise import edm_scalings, loss_weight


class Denoiser(nn.Module):
    """Wraps a net F into the EDM denoiser D; the net knows nothing of sigma scaling."""

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, z: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(z.dtype)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        return c_skip * z + c_out * self.net(c_in * z, c_noise.flatten(), labels)


def denoising_loss(
    denoiser: nn.Module,
    clean: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    labels: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    """Mean over the batch of w(sigma) * mean-over-pixels ||D(y + sigma*eps, sigma) - y||^2."""
    noisy = clean + sigma.reshape(-1, 1, 1, 1) * noise
    denoised = denoiser(noisy, sigma, labels)
    per_example = (denoised - clean).pow(2).flatten(1).mean(dim=1)
    return (loss_weight(sigma, sigma_data) * per_example).mean()
