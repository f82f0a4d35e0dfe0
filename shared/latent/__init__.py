"""Latent space: a VAE the user holds (`vae.py`), images encoded once into a latent cache (`encode.py`), the run's
VAE settled before it starts (`resolve.py`), and its latents decoded wherever a person looks at images (samples,
pictures, evaluation): `decode_images`. docs/latent.md."""

from __future__ import annotations

import torch

from shared.data.errors import DataError
from shared.latent.vae import Vae, cached_vae, vae_sha256

__all__ = ["Vae", "decode_images", "is_latent", "vae_sha256", "viewable"]


def is_latent(config) -> bool:
    """Whether the run trains on a VAE's latents (its images are those latents decoded)."""
    return config.data.vae is not None


def decode_images(config, latents: torch.Tensor) -> torch.Tensor:
    """What a person sees of the model's outputs: the run's latents decoded by its VAE; images as they are."""
    if not is_latent(config):
        return latents
    try:
        vae = cached_vae(config.data.vae, config.data.vae_sha256)
    except DataError as err:
        raise DataError(f"{err} (this run trains on that VAE's latents: its samples need it to be decoded)") from None
    return vae.decode(latents)


def viewable(config, latents: torch.Tensor) -> torch.Tensor:
    """For pictures that must not fail a training job (the workers' previews): decoded where the run's VAE can be
    read on this node, else the latents' first three channels as they are."""
    try:
        return decode_images(config, latents)
    except DataError:
        return latents[:, :3] if latents.shape[1] >= 3 else latents[:, :1]
