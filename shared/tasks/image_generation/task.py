"""Class-conditional image generation (DiffusionBlocks' image experiments): the target is the image itself,
`z = y + sigma * eps` in pixel space, the block is a DiT with adaLN-Zero (`shared.model.BlockNet`) behind a
preconditioner (`shared.precond`: EDM's, flow matching's with `noise.axis: flow`, or an imported model's own), the
loss `w(sigma) * ||D(z, sigma) - y||^2` (EDM's lambda, or velocity MSE); inference is Euler (or Heun) through the
assembled blocks with classifier-free guidance (`shared.generate`)."""

from __future__ import annotations

import torch
from torch import nn

from shared.model import BlockNet, NetSpec
from shared.precond import AXIS, LOSSES, PRECONDITIONERS, Denoiser, denoising_loss
from shared.pretrained import IMPORTS
from shared.tasks.base import SAMPLES_PNG
from shared.tasks.edm import EDMTask
from shared.visualize import block_preview


class ImageGeneration(EDMTask):
    name = "image_generation"
    outputs = frozenset({SAMPLES_PNG})
    noise_axes = frozenset({"edm", "flow"})
    init_formats = frozenset({"run", "diffusers", "dit"})

    def __init__(self, precond: str = "edm", loss: str = "edm"):
        if precond not in PRECONDITIONERS or loss not in LOSSES:
            raise ValueError(f"precond {precond!r} / loss {loss!r}: expected one of {PRECONDITIONERS} / {LOSSES}")
        self.precond, self.loss_kind = precond, loss

    @classmethod
    def options_from(cls, config) -> dict:
        precond, flow = precond_of(config), config.noise.axis == "flow"
        loss = config.noise.flow_loss if flow else "edm"
        return {} if (precond, loss) == ("edm", "edm") else {"precond": precond, "loss": loss}

    @classmethod
    def check_config(cls, config) -> None:
        init = config.init
        if init.format in IMPORTS and AXIS[precond_of(config)] != config.noise.axis:
            raise ValueError(
                f"init.prediction: an imported {init.prediction} model trains on noise.axis "
                f"{AXIS[precond_of(config)]} (got {config.noise.axis}); a SiT checkpoint is velocity, a DiT eps"
            )

    @property
    def options(self) -> dict:
        if (self.precond, self.loss_kind) == ("edm", "edm"):
            return {}  # as block files and manifests written before other preconditioners existed
        return {"precond": self.precond, "loss": self.loss_kind}

    def plan_header(self, boundaries: list[float]) -> dict:
        if self.precond == "edm":
            return {}  # the plan of an image run is unchanged since before tasks existed
        header = {"task": self.name, "axis": AXIS[self.precond], "precond": self.precond}
        if header["axis"] == "flow":  # the flow time of each boundary, t = sigma / (1 + sigma)
            header["t_boundaries"] = [s / (1 + s) for s in boundaries]
        return header

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        return BlockNet(spec, activation_checkpointing=activation_checkpointing)

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        return Denoiser(net, sigma_data, self.precond)

    def loss(
        self, model, images, labels, sigma, *, sigma_data: float, generator: torch.Generator, label_dropout: float
    ) -> torch.Tensor:
        eps = torch.randn(images.shape, generator=generator, device=images.device)
        null_label = getattr(model, "module", model).net.spec.num_classes
        labels = drop_labels(labels, label_dropout, null_label, generator)
        return denoising_loss(model, images, sigma, eps, labels, sigma_data, self.loss_kind)

    def preview(self, denoiser, images, labels, sigma_lo, sigma_hi, generator) -> torch.Tensor:
        """Held-out images noised into the block's own interval and denoised by it (`block_preview`)."""
        return block_preview(denoiser, images, labels, sigma_lo, sigma_hi, generator)


def drop_labels(labels: torch.Tensor, rate: float, null_label: int, generator: torch.Generator) -> torch.Tensor:
    """Replace a `rate` fraction of labels with the null class (trains the unconditional model for CFG)."""
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < rate
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def precond_of(config) -> str:
    """The preconditioner the run's blocks train behind: an imported network keeps its own convention (DiT:
    DDPM epsilon; SiT: its velocity), this project's networks EDM's or flow matching's (`noise.axis`)."""
    if config.init.format in IMPORTS:
        return "sit_velocity" if config.init.prediction == "velocity" else "ddpm_eps"
    return "flow" if config.noise.axis == "flow" else "edm"
