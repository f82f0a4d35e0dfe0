"""What a finished run leaves beside its manifest: its task's artefacts (`shared.tasks.outputs`), written once the
blocks are assembled, with the assembled model loaded and verified once. Returns a one-line summary for the log."""

from __future__ import annotations

from pathlib import Path

from shared.config import Config
from shared.storage import Storage
from shared.tasks.outputs import outputs_for


def write_run_artefacts(
    run_dir: Path, config: Config, manifest: dict, storage: Storage, run_id: str, blocks, model
) -> str:
    return outputs_for(config).write_artefacts(run_dir, config, manifest, storage, run_id, blocks, model)
