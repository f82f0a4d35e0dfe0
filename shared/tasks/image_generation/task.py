"""Class-conditional image generation (DiffusionBlocks' image experiments): the target is the image itself,
`z = y + sigma * eps` in pixel space, the block is a DiT with adaLN-Zero (`shared.model.BlockNet`) behind the EDM
preconditioner, the loss `w(sigma) * ||D(z, sigma) - y||^2`; inference is Euler (or Heun) through the assembled
blocks with classifier-free guidance (`shared.generate`)."""

from __future__ import annotations

import torch
from torch import nn

from shared.model import BlockNet, NetSpec
from shared.precond import Denoiser, denoising_loss
from shared.tasks.base import SAMPLES_PNG
from shared.tasks.edm import EDMTask
from shared.visualize import block_preview


class ImageGeneration(EDMTask):
    name = "image_generation"
    outputs = frozenset({SAMPLES_PNG})

    @classmethod
    def options_from(cls, config) -> dict:
        return {}

    @property
    def options(self) -> dict:
        return {}

    def plan_header(self) -> dict:
        return {}  # the plan of an image run is unchanged since before tasks existed

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        return BlockNet(spec, activation_checkpointing=activation_checkpointing)

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        return Denoiser(net, sigma_data)

    def loss(
        self, model, images, labels, sigma, *, sigma_data: float, generator: torch.Generator, label_dropout: float
    ) -> torch.Tensor:
        eps = torch.randn(images.shape, generator=generator, device=images.device)
        null_label = getattr(model, "module", model).net.spec.num_classes
        labels = drop_labels(labels, label_dropout, null_label, generator)
        return denoising_loss(model, images, sigma, eps, labels, sigma_data)

    def preview(self, denoiser, images, labels, sigma_lo, sigma_hi, generator) -> torch.Tensor:
        """Held-out images noised into the block's own interval and denoised by it (`block_preview`)."""
        return block_preview(denoiser, images, labels, sigma_lo, sigma_hi, generator)


def drop_labels(labels: torch.Tensor, rate: float, null_label: int, generator: torch.Generator) -> torch.Tensor:
    """Replace a `rate` fraction of labels with the null class (trains the unconditional model for CFG)."""
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < rate
    return torch.where(drop, torch.full_like(labels, null_label), labels)
