"""The task interface: everything the core (worker, plan, assembly, coordinator, API, CLI) asks of a kind of model.
A task is one folder under `shared/tasks/` (docs/tasks.md): its `task.py` implements this protocol, its `config.py`
(if any) the config section it owns. The core looks a task up by name once (`shared.tasks.task_for`) and then only
calls it; it never compares the name.

What a finished run of a task may serve is declared in `outputs` (the API's artefact routes and the CLI's
`sample` / `predict` check it): `SAMPLES_PNG` (a grid of generated images), `SAMPLES_TXT` (generated text),
`PREDICT` (labels for given images), `PROMPTS` (text samples that continue a caller's prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from shared.model import NetSpec

if TYPE_CHECKING:
    from shared.tasks.bench import QualityBench

SAMPLES_PNG = "samples.png"
SAMPLES_TXT = "samples.txt"
PREDICT = "predict"
PROMPTS = "prompts"  # its text samples continue a given prompt (`sample_texts(..., prompt=...)`)


class Task(Protocol):
    name: ClassVar[str]
    axis: ClassVar[str]  # the noise axis: "sigma" (EDM tasks) or "t" (masking time); higher is noisier on both
    progress_metric: ClassVar[str | None]  # a training metric shown beside the loss, or None
    section: ClassVar[str | None]  # the config section this task owns (`classification`, `text`), or None
    section_model: ClassVar[type | None]  # its pydantic model (a `shared.config_base.Section`); the run config of
    # this task is `shared.config.config_class(name)`: the shared sections plus this one
    outputs: ClassVar[frozenset[str]]  # what a finished run serves: SAMPLES_PNG, SAMPLES_TXT, PREDICT, PROMPTS
    noise_axes: ClassVar[frozenset[str]]  # the `noise.axis` values it trains on ("edm"; image generation "flow" too)
    init_formats: ClassVar[frozenset[str]]  # checkpoints it may start from: "run" (its own end-to-end runs), and
    # for image generation "diffusers" and "dit" (imported DiT/SiT networks, `shared.pretrained`)

    # The run config -> the plan
    @classmethod
    def options_from(cls, config) -> dict:
        """This task's options under `config` (JSON values; the keyword arguments of the task's constructor)."""

    @classmethod
    def check_config(cls, config) -> None:
        """Rules across sections that only this task knows (ValueError naming the fields), run at parse time."""

    @classmethod
    def sources(cls, config) -> list[tuple[str, str]]:
        """(config field, path) of every data source this task's run reads."""

    @classmethod
    def resolve_data(cls, config, *, confined: bool):
        """The config with its data facts filled in (DataError naming what is wrong); `confined`: a service
        caller's sources, already confined to the roots (`shared.data.paths`)."""

    @classmethod
    def data_label(cls, config) -> str:
        """What the run trains on, for the manifest (a built-in dataset's name, a source)."""

    @property
    def options(self) -> dict:
        """The options this task was built with: saved in every block file, so a block rebuilds as it trained."""

    def plan_header(self, boundaries: list[float]) -> dict:
        """Keys the plan and the manifest lead with, given the plan's `boundaries` (the task and its axis; {} for
        image generation on EDM's axis, whose plan is unchanged since before tasks existed; flow adds its t)."""

    def boundaries(self, config) -> list[float]:
        """B + 1 ascending noise levels: block b owns [boundaries[B-1-b], boundaries[B-b]] (block 0 the noisiest)."""

    def widen(self, lo: float, hi: float, gamma: float, lo_min: float, hi_max: float) -> tuple[float, float]:
        """A block's training range: its own interval widened by `gamma` on each side, within the axis."""

    def net_spec(self, config, num_layers: int) -> NetSpec:
        """The shape of a block of `num_layers` layers under `config`."""

    def tokens_per_example(self, spec: NetSpec) -> int:
        """Tokens a block's layers attend over per example (the activation memory model of `dblocks bench memory`)."""

    # Training one block
    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        """A fresh block network F (its state dict is what a block file holds)."""

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        """The preconditioned module around `net`: what the loss calls in training, and what the assembled model
        routes each noise level to at inference."""

    def train_batches(self, config, *, seed: int, rank: int = 0, world_size: int = 1) -> Any:
        """The training stream: `next_batch(batch_size, generator) -> (inputs, labels or None)`, `to(device)`,
        `state_dict()` / `load_state_dict()` (saved with every checkpoint, for an exact resume), `skipped`."""

    def sample_noise(self, num: int, lo: float, hi: float, config, generator: torch.Generator) -> torch.Tensor:
        """`num` training noise levels in [lo, hi] (the block's widened range), from `generator`."""

    def loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
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

    # Previews while training
    def preview_batch(self, config, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Held-out examples the per-block previews show."""

    def preview(
        self,
        denoiser: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        sigma_lo: float,
        sigma_hi: float,
        generator: torch.Generator,
    ) -> torch.Tensor | str | None:
        """What this block alone does in its own interval: an image grid (N, C, H, W), a text, or None."""


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What `dblocks eval` (and the quality benchmark) may ask of a task's evaluation; each task reads its part."""

    weights: str = "ema"
    seed: int = 0
    num_samples: int = 1000  # generated samples to evaluate (image generation)
    num_steps: int | None = None  # sampler steps (None: the run's)
    inception: Path | None = None  # a local FID Inception-v3 weights file: standard FID too (image generation)
    cache_dir: Path | None = None  # where derived, re-creatable files (the evaluation classifier) are kept


class Outputs(Protocol):
    """What a finished run of a task leaves and answers (the task folder's `outputs.py`): the artefacts written
    beside the manifest once the blocks are assembled, its evaluation, that evaluation as one line, and its part in
    the quality benchmark (`bench.py`)."""

    name: ClassVar[str]  # the task's name
    quality: ClassVar[QualityBench]  # its cases, metrics and page in the quality benchmark

    def write_artefacts(
        self, run_dir: Path, config, manifest: dict, storage, run_id: str, blocks: list, model: nn.Module
    ) -> str:
        """Everything beside the manifest (samples, pictures, eval.json), from the assembled `model` loaded and
        verified once; returns a one-line summary for the log."""

    def evaluate(self, run_dir: Path, config, options: EvalOptions) -> dict:
        """The run's evaluation on its held-out data (what `dblocks eval --json` prints; JSON values)."""

    def summary(self, result: dict, options: EvalOptions) -> str:
        """`evaluate`'s result as the one line `dblocks eval` prints without --json."""

    # Present where the task's `outputs` declares them (the API's and the CLI's fresh samples and predictions):
    def sample_images(self, run_dir: Path, config, **params) -> tuple[torch.Tensor, torch.Tensor]:
        """SAMPLES_PNG: fresh samples (N, C, H, W) and their labels (N,) from the assembled model, class-balanced;
        `params` (num_per_class, num_steps, cfg_scale, seed, weights) not given come from the run's config."""

    def sample_texts(self, run_dir: Path, config, **params) -> list[str]:
        """SAMPLES_TXT: fresh texts (num, length, steps, seed, weights; with PROMPTS also prompt, temperature) from
        the assembled model, one line each."""

    def predict(self, run_dir: Path, config, images: torch.Tensor, *, weights: str, seed: int) -> torch.Tensor:
        """PREDICT: class probabilities (N, K) for `images` (N, C, H, W in [-1, 1])."""
