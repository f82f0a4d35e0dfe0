"""What the EDM tasks (image generation, classification) share: the sigma axis and its plan, the truncated
log-normal draw of training sigmas, image data, and the block network's shape from the data."""

from __future__ import annotations

import torch

from shared.data import data_shape, load_split, resolve_images, train_batches
from shared.model import NetSpec
from shared.noise import sample_sigmas
from shared.partition import equiprobable_boundaries, uniform_log_boundaries, widen
from shared.pretrained import net_conventions


class SigmaAxis:
    """The EDM sigma axis, as a task's plan and training use it: equi-probability (or uniform log) boundaries,
    the overlap in log sigma, and the truncated log-normal draw (the EDM tasks, and the autoregressive LM)."""

    axis = "sigma"  # the noise level: higher is noisier; block 0 owns the highest
    noise_axes = frozenset({"edm"})  # the `noise.axis` values a task on this axis trains on
    init_formats = frozenset({"run"})  # the checkpoints it may start from (`init.checkpoint`): its own runs

    def boundaries(self, config) -> list[float]:
        """B + 1 ascending sigmas (B = the planned blocks): equal training mass, or uniform in log sigma."""
        n, noise = config.planned_blocks, config.noise
        if config.blocks.partition == "uniform_log":
            return uniform_log_boundaries(n, noise.sigma_min, noise.sigma_max)
        return equiprobable_boundaries(n, noise.log_mean, noise.p_std, noise.sigma_min, noise.sigma_max)

    def widen(self, lo: float, hi: float, gamma: float, lo_min: float, hi_max: float) -> tuple[float, float]:
        return widen(lo, hi, gamma, lo_min, hi_max)  # in log sigma

    def sample_noise(self, num: int, lo: float, hi: float, config, generator: torch.Generator) -> torch.Tensor:
        noise = config.noise
        return sample_sigmas(num, lo, hi, noise.log_mean, noise.p_std, generator=generator)


class EDMTask(SigmaAxis):
    progress_metric: str | None = None
    section: str | None = None
    section_model: type | None = None

    @classmethod
    def check_config(cls, config) -> None:
        pass

    @classmethod
    def sources(cls, config) -> list[tuple[str, str]]:
        d = config.data
        fields = (("data.source", d.source), ("data.test_source", d.test_source), ("data.vae", d.vae))
        if d.encoded_from is not None:  # a resolved config sent again: its images, not its cache, are the caller's
            fields = (("data.encoded_from", d.encoded_from), ("data.vae", d.vae))
        return [(field, uri) for field, uri in fields if uri is not None]

    @classmethod
    def resolve_data(cls, config, *, confined: bool):
        return resolve_images(config, confined=confined)

    @classmethod
    def data_label(cls, config) -> str:
        return config.data.dataset

    def plan_header(self, boundaries: list[float]) -> dict:
        return {"task": self.name, "axis": self.axis}

    def net_spec(self, config, num_layers: int) -> NetSpec:
        """A block of `num_layers` layers under `config` (image shape and classes from the data)."""
        shape, model = data_shape(config), config.model
        return NetSpec(
            image_size=shape.image_size,
            channels=shape.channels,
            num_classes=shape.num_classes,
            patch_size=model.patch_size,
            hidden_size=model.hidden_size,
            num_heads=model.num_heads,
            mlp_ratio=model.mlp_ratio,
            num_layers=num_layers,
            output_conv=model.output_conv,
            **net_conventions(config.init),  # an imported network's own numerics (none without init.checkpoint)
        )

    def tokens_per_example(self, spec: NetSpec) -> int:
        return (spec.image_size // spec.patch_size) ** 2

    def train_batches(self, config, *, seed: int, rank: int = 0, world_size: int = 1):
        return train_batches(config.data, seed=seed, rank=rank, world_size=world_size)

    def preview_batch(self, config, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-out examples the per-block previews show."""
        return load_split(config.data, "test", limit=count)
