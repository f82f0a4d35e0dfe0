"""The task interface: what a batch is, how the target is noised, the block network, the loss, inference through
the assembled blocks. EDM tasks (image generation, classification) share the sigma axis and its partition
(`shared.partition`); each task says the rest.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from shared.model import NetSpec


class Task(Protocol):
    name: str
    axis: str  # the noise axis: "sigma" (EDM tasks) or "t" (masking time); higher is noisier on both
    progress_metric: str | None  # a training metric the live table and Grafana show beside the loss, or None

    @classmethod
    def options_from(cls, config) -> dict:
        """This task's options under `config` (JSON values; the keyword arguments of the task's constructor)."""

    @property
    def options(self) -> dict:
        """The options this task was built with: saved in every block file, so a block rebuilds as it trained."""

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        """A fresh block network F (its state dict is what a block file holds)."""

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        """The EDM-preconditioned module around `net`: what the loss calls in training, and what the assembled
        model routes each noise level to at inference."""

    def loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        sigma: torch.Tensor,
        *,
        sigma_data: float,
        generator: torch.Generator,
        label_dropout: float,
    ) -> torch.Tensor:
        """This block's training loss on one batch at per-example noise levels `sigma` (a scalar tensor). All its
        randomness comes from `generator`; `label_dropout` is used by tasks that train for guidance."""

    def progress(self, model: nn.Module, images, labels, sigma, generator: torch.Generator) -> float:
        """`progress_metric` on one training batch at its noise levels (called at report steps, without grad)."""

    def preview(
        self,
        denoiser: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        sigma_lo: float,
        sigma_hi: float,
        generator: torch.Generator,
    ) -> torch.Tensor | None:
        """A grid (N, C, H, W) showing what this block alone does in its own interval, or None."""
