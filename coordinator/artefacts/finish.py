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


def artefacts_from_files(run_dir: str, config_yaml: str, manifest: dict, storage_uri: str, run_id: str, blocks) -> str:
    """`write_run_artefacts` where only files are at hand (a model worker, coordinator/model_work.py): the run's
    config parsed, its assembled model loaded and verified from `run_dir`."""
    import yaml

    from shared.assembly import load_assembled
    from shared.config import parse_config

    config = parse_config(yaml.safe_load(config_yaml), stored=True)
    model, _ = load_assembled(Path(run_dir), config.sample.weights)
    return write_run_artefacts(Path(run_dir), config, manifest, Storage.from_uri(storage_uri), run_id, blocks, model)
