"""Assembly: collect each finished block's weights into the run directory and write the verified manifest."""

from __future__ import annotations

from pathlib import Path

import torch

from shared.assembly import load_assembled
from shared.checkpoint import (MANIFEST_VERSION, CheckpointError, check_contiguous, read_block_meta,
                               sha256_file, write_manifest)
from shared.config import Config
from shared.data import DATASETS
from shared.generate import class_labels, generate, step_sigmas
from shared.images import grid_png
from shared.model import count_params
from shared.partition import BlockSpec
from shared.storage import Storage
from workers.job import net_spec, previews_dir

from coordinator.store import BlockRecord, State


def block_file(index: int) -> str:
    return f"block_{index}.safetensors"


def collect_block(storage: Storage, checkpoint_path: str, run_dir: Path, spec: BlockSpec,
                  config_hash: str) -> tuple[str, str]:
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
            raise CheckpointError(f"{source}: trained under config {str(meta.get('config_hash'))[:12]}, "
                                  f"this run's is {config_hash[:12]}")
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


def assemble(config: Config, specs: list[BlockSpec], boundaries: list[float], blocks: list[BlockRecord],
             run_dir: Path) -> dict:
    """Verify every block finished with its file intact and ranges contiguous, then write manifest.json."""
    unfinished = [b.index for b in blocks if b.state != State.SUCCEEDED]
    if unfinished:
        raise CheckpointError(f"cannot assemble: blocks {unfinished} have not succeeded")
    entries = []
    for spec, record in zip(specs, sorted(blocks, key=lambda b: b.index)):
        if sha256_file(run_dir / record.weights_file) != record.sha256:
            raise CheckpointError(f"block {spec.index}: {record.weights_file} changed since it was collected")
        entries.append({"index": spec.index, "sigma_lo": spec.sigma_lo, "sigma_hi": spec.sigma_hi,
                        "train_sigma_lo": spec.train_sigma_lo, "train_sigma_hi": spec.train_sigma_hi,
                        "layers": spec.layers, "file": record.weights_file, "sha256": record.sha256,
                        "num_params": count_params(net_spec(config, spec.num_layers)),
                        "steps": record.step, "attempts": record.attempt})
    check_contiguous(boundaries, entries)
    manifest = {"manifest_version": MANIFEST_VERSION, "config_hash": config.hash(), "mode": config.train.mode,
                "dataset": config.data.dataset, "boundaries": boundaries, "blocks": entries}
    write_manifest(run_dir, manifest)
    return manifest


def sample_run(run_dir: Path, config: Config, *, num_per_class: int | None = None, num_steps: int | None = None,
               cfg_scale: float | None = None, seed: int | None = None,
               weights: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(samples, labels) from an assembled run, class-balanced (class by class); whatever is not given comes
    from the run's `sample` config."""
    sample = config.sample
    pick = lambda value, default: default if value is None else value  # noqa: E731
    num_per_class, num_steps = pick(num_per_class, sample.num_per_class), pick(num_steps, sample.num_steps)
    cfg_scale, seed = pick(cfg_scale, sample.cfg_scale), pick(seed, sample.seed)
    denoiser, _ = load_assembled(run_dir, pick(weights, sample.weights))
    info, noise = DATASETS[config.data.dataset], config.noise
    sigmas = step_sigmas(schedule=sample.schedule, num_steps=num_steps, sigma_min=noise.sigma_min,
                         sigma_max=noise.sigma_max, rho=sample.rho, p_mean=noise.p_mean, p_std=noise.p_std)
    labels = class_labels(info.num_classes, num_per_class)
    samples = generate(denoiser, labels=labels, image_shape=(info.channels, info.image_size, info.image_size),
                       sigmas=sigmas, cfg_scale=cfg_scale, null_label=info.num_classes,
                       sampler=sample.sampler, seed=seed)
    return samples, labels


def sample_grid_png(run_dir: Path, config: Config, **overrides) -> bytes:
    """`sample_run` as a PNG grid: one row per class."""
    samples, labels = sample_run(run_dir, config, **overrides)
    return grid_png(samples, len(labels) // DATASETS[config.data.dataset].num_classes)


def write_samples_png(run_dir: Path, config: Config, path: Path | None = None) -> Path:
    path = path or run_dir / "samples.png"
    path.write_bytes(sample_grid_png(run_dir, config))
    return path
