"""Assembly: collect each finished block's weights into the run directory and write the verified manifest."""

from __future__ import annotations

from pathlib import Path

from coordinator.records import BlockRecord, State
from shared.checkpoint import (
    MANIFEST_VERSION,
    CheckpointError,
    check_contiguous,
    read_block_meta,
    sha256_file,
    write_manifest,
)
from shared.config import Config
from shared.job import previews_dir
from shared.partition import BlockSpec
from shared.plan import block_entry
from shared.pretrained import describe
from shared.storage import Storage
from shared.tasks import task_for


def block_file(index: int) -> str:
    return f"block_{index}.safetensors"


def collect_block(
    storage: Storage, checkpoint_path: str, run_dir: Path, spec: BlockSpec, config_hash: str
) -> tuple[str, str]:
    """Copy a block's final weights from its Ray checkpoint (on `storage`) into the run dir; refuse a file
    trained for another block (sigma range, layers) or another config. Returns (file name, sha256)."""
    source = f"{checkpoint_path}/block.safetensors"
    target = run_dir / block_file(spec.index)
    tmp = target.with_name(f".{target.name}.incoming")
    storage.download(source, tmp)
    try:
        meta = read_block_meta(tmp)
        if meta["block"] != spec.to_dict():
            raise CheckpointError(f"{source}: holds block {meta['block']}, expected {spec.to_dict()}")
        if meta.get("config_hash") != config_hash:
            raise CheckpointError(
                f"{source}: trained under config {str(meta.get('config_hash'))[:12]}, this run's is {config_hash[:12]}"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target.name, sha256_file(target)


def collect_previews(storage: Storage, run_dir: Path) -> int:
    """Copy the previews the workers wrote on the checkpoint storage into run_dir/previews; returns how many."""
    directory = previews_dir(storage)
    names = storage.list_names(directory)
    for name in names:
        storage.download(f"{directory}/{name}", run_dir / "previews" / name)
    return len(names)


def assemble(
    config: Config, specs: list[BlockSpec], boundaries: list[float], blocks: list[BlockRecord], run_dir: Path
) -> dict:
    """Verify every block finished with its file intact and ranges contiguous, then write manifest.json."""
    unfinished = [b.index for b in blocks if b.state != State.SUCCEEDED]
    if unfinished:
        raise CheckpointError(f"cannot assemble: blocks {unfinished} have not succeeded")
    entries = []
    for spec, record in zip(specs, sorted(blocks, key=lambda b: b.index)):
        if sha256_file(run_dir / record.weights_file) != record.sha256:
            raise CheckpointError(f"block {spec.index}: {record.weights_file} changed since it was collected")
        entries.append(
            {
                **block_entry(config, spec),
                "file": record.weights_file,
                "sha256": record.sha256,
                "steps": record.step,
                "attempts": record.attempt,
            }
        )
    check_contiguous(boundaries, entries)
    task = task_for(config)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "config_hash": config.hash(),
        "mode": config.train.mode,
        "task": config.task,
        "task_options": task.options,  # text: the vocabulary, so a run decodes without its config
        "dataset": task.data_label(config),
        "boundaries": boundaries,
        "blocks": entries,
    }
    if config.init.checkpoint is not None:  # where the blocks started: the source and the sha256 it had then
        manifest["init"] = describe(config)
    write_manifest(run_dir, manifest)
    return manifest
