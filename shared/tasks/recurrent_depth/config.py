"""The section of a recurrent-depth run (`task: recurrent_depth`): an autoregressive LM's section (corpus, tokens,
sequences, generation, evaluation: it is one, and its data, generation and evaluation are that task's) plus the
recurrence. It keeps the section's name, `autoregressive`."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.config_base import MAX_SAMPLE_STEPS
from shared.tasks.autoregressive.config import AutoregressiveConfig

MAX_ITERATIONS = 256


class RecurrentDepthConfig(AutoregressiveConfig):
    """A recurrent-depth LM (Huginn's shape: a prelude, a core iterated K times, a coda): `model.num_layers` counts
    all three. `objective: denoising` trains the core as one denoiser (DiffusionBlocks: one core pass per example,
    no backprop through iterations); `objective: backprop` trains it Huginn's way (a random iteration count per step,
    backprop through the last `backprop_iterations`)."""

    prelude_layers: int = Field(2, ge=0, le=64, description="Layers over the clean tokens before the core (once).")
    coda_layers: int = Field(2, ge=0, le=64, description="Layers after the core, before the head.")
    sample_steps: int = Field(
        32,
        ge=1,
        le=MAX_SAMPLE_STEPS,
        description="Core iterations K per generated token at inference (the paper's 32): Euler steps of the core "
        "as a denoiser (denoising), or iterations of its state (backprop).",
    )
    max_iterations: int = Field(
        32, ge=1, le=MAX_ITERATIONS, description="backprop: training draws 1..max_iterations core iterations per step."
    )
    backprop_iterations: int = Field(
        8, ge=1, le=MAX_ITERATIONS, description="backprop: gradients flow through the last this-many iterations."
    )

    @model_validator(mode="after")
    def _truncation_fits(self) -> RecurrentDepthConfig:
        if self.backprop_iterations > self.max_iterations:
            raise ValueError(
                f"backprop_iterations {self.backprop_iterations} is more than max_iterations {self.max_iterations}"
            )
        return self
