"""What a finished run leaves beside its manifest, by task: one function per task, called once the blocks are
assembled (with the assembled model, loaded and verified once). Returns a one-line summary for the log."""

from __future__ import annotations

import math
from pathlib import Path

from coordinator.artefacts.classification import write_classification_artefacts
from coordinator.artefacts.pictures import write_loss_curves, write_pictures
from coordinator.artefacts.sample import write_samples_png
from coordinator.artefacts.text import write_text_artefacts
from shared.config import Config
from shared.storage import Storage


def image_generation_artefacts(
    run_dir: Path, config: Config, manifest: dict, storage: Storage, run_id: str, blocks, model
) -> str:
    png = write_samples_png(run_dir, config, model=model)
    write_pictures(run_dir, config, manifest, storage, run_id, blocks, denoiser=model)
    return f"samples in {png}"


def classification_artefacts(
    run_dir: Path, config: Config, manifest: dict, storage: Storage, run_id: str, blocks, model
) -> str:
    return write_classification_artefacts(run_dir, config, model)


def text_artefacts(run_dir: Path, config: Config, manifest: dict, storage: Storage, run_id: str, blocks, model) -> str:
    summary = write_text_artefacts(run_dir, config, model, manifest["boundaries"])
    write_loss_curves(run_dir, config, storage, run_id, blocks, scale=1 / math.log(2), ylabel="training loss (bits)")
    return summary


RUN_ARTEFACTS = {
    "image_generation": image_generation_artefacts,
    "classification": classification_artefacts,
    "text": text_artefacts,
}


def write_run_artefacts(
    run_dir: Path, config: Config, manifest: dict, storage: Storage, run_id: str, blocks, model
) -> str:
    return RUN_ARTEFACTS[config.task](run_dir, config, manifest, storage, run_id, blocks, model)
