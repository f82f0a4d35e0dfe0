"""The `init` section of a run config: start every block from a trained network instead of random weights
(docs/pretrained.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.config_base import Section


class InitConfig(Section):
    checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Start from a trained network (local path): a finished end-to-end run directory of this "
        "service, a diffusers DiT folder (DiTTransformer2DModel) or a DiT/SiT .pt state dict. Block b takes layers "
        "[b L/B, (b+1) L/B) and its own copies of the embeddings and head; the optimiser starts fresh. Unset: random.",
    )
    format: Literal["auto", "run", "diffusers", "dit"] = Field(
        "auto", description="Format of the checkpoint; auto infers it (and the resolved config records it)."
    )
    prediction: Literal["auto", "eps", "velocity"] = Field(
        "auto",
        description="What an imported network predicts: eps (DiT, DDPM's linear VP schedule) or velocity (SiT, "
        "flow matching: needs noise.axis flow); auto: eps. A run of this service says its own.",
    )
    weights: Literal["ema", "raw"] = Field("ema", description="A run's EMA or raw weights.")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Filled in when the run is submitted: the checkpoint's sha256 (of its weights file); a worker "
        "refuses a checkpoint that changed since.",
    )
    # Filled in from the source (the numerical conventions of its network: shared.model.NetSpec):
    pos_axes: Literal["yx", "xy"] | None = Field(None, description="Resolved: the source's position table order.")
    freq_shift: Literal[0, 1] | None = Field(None, description="Resolved: the source's noise-embedding shift.")
    norm_eps: float | None = Field(None, gt=0, le=0.1, description="Resolved: the source's LayerNorm epsilon.")

    @model_validator(mode="after")
    def _needs_a_checkpoint(self) -> InitConfig:
        if self.checkpoint is None:
            given = [f for f in ("sha256", "pos_axes", "freq_shift", "norm_eps") if getattr(self, f) is not None]
            given += [f for f in ("format", "prediction") if getattr(self, f) != "auto"]
            if given:
                raise ValueError(f"init.{given[0]} applies to init.checkpoint, which is unset")
        if self.format == "run" and self.prediction != "auto":
            raise ValueError("init.prediction: a run of this service says its own prediction; leave it auto")
        return self
