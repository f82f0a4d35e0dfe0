"""The `classification` section of a run config: what only a classification run reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.config_base import MAX_SAMPLE_STEPS, Section


class ClassificationConfig(Section):
    """Classification by label denoising (`task: classification`)."""

    objective: Literal["label_denoising", "backprop"] = Field(
        "label_denoising",
        description="label_denoising = the DiffusionBlocks task; backprop = the same network as an ordinary "
        "classifier trained end to end with cross-entropy (the baseline; needs train.mode end_to_end).",
    )
    augment_shift: int = Field(
        2,
        ge=0,
        le=16,
        description="Training images are shifted by up to this many pixels each way (edge padding); 0 = off.",
    )
    output: Literal["features", "skip"] = Field(
        "skip",
        description="How the label token's logits are read: skip = head(adaLN(c_out * F + c_skip * z)), the official "
        "code's (the default since issue 40: as accurate as features within 0.002-0.006 over 3 seeds, "
        "docs/quality.md), the noisy label also on a skip path as D = c_skip z + c_out F is for images; features = "
        "head(adaLN(F)), the noisy label entering only at the input (this project's first form).",
    )
    grid: Literal["official", "boundaries"] = Field(
        "official",
        description="Inference noise levels when num_steps is 0 (one call per block): official = B points of the "
        "equal-probability grid, sigma_max down to sigma_min (the official code's default: B - 1 Euler steps and a "
        "last call at sigma_min); boundaries = each block called at its upper boundary, the last logits read there.",
    )
    num_steps: int = Field(
        0, ge=0, le=MAX_SAMPLE_STEPS, description="Calls at inference on the equal-probability grid; 0 = B (`grid`)."
    )
    start: Literal["noise", "zero"] = Field(
        "noise",
        description="Where inference starts in label-embedding space: noise = sigma_max * randn (the paper's; the "
        "chain then draws a label from the model's posterior, so accuracy is about the mean probability of the true "
        "class); zero = the noise's mean, a deterministic path that follows the most probable label.",
    )
    calibration_bins: int = Field(15, ge=2, le=100, description="Bins of the expected calibration error.")
