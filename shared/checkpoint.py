"""Checkpoint and manifest formats. Minimal, self-describing, no pickled code.

Block weights file (safetensors), `block_<i>.safetensors`:
    tensors  `model.<param>` (raw weights) and `ema.<param>` (EMA weights)
    metadata {"format": "dblocks-block", "format_version": "2", "block": BlockSpec JSON, "net": NetSpec JSON,
              "sigma_data", "step", "config_hash" (each JSON-encoded)}
Training state (a checkpoint directory, a block actor's or a Ray Train run's, used to resume one block):
    block.safetensors      as above
    optimizer.safetensors  AdamW moments `state.<i>.<key>`, the data generator state `rng.data`
    state.json             {"format_version", "step", "param_groups", "metrics"}
Manifest (`manifest.json` in a run directory): config hash, boundaries, and per block: index, sigma range,
file, sha256, num_params. `load_manifest` refuses a manifest whose files are missing, altered or
whose ranges are not contiguous.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

FORMAT = "dblocks-block"
FORMAT_VERSION = 2  # 2: block metadata carries the config hash
MANIFEST_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or manifest that must not be loaded; the message says which file and why."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_block_weights(path: str | Path, *, model: dict, ema: dict, meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.items()}
    tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    metadata |= {k: json.dumps(v) for k, v in meta.items()}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_block_meta(path: str | Path) -> dict:
    """The metadata of a block weights file, checked for format and version."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
    try:
        return {k: v if k in ("format", "format_version") else json.loads(v) for k, v in meta.items()}
    except ValueError as err:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({err})") from None


# Which weights, by the names users give them (`sample.weights`, `--weights`, `?weights=`), to tensor prefixes.
WEIGHT_PREFIXES = {"ema": "ema.", "raw": "model.", "model": "model."}


def load_block_weights(path: str | Path, which: str = "ema") -> tuple[dict, dict]:
    """(state dict of `which` weights — 'ema', or 'raw' (also called 'model') —, metadata)."""
    if which not in WEIGHT_PREFIXES:
        raise ValueError(f"weights {which!r}: expected one of {sorted(WEIGHT_PREFIXES)}")
    meta = read_block_meta(path)
    tensors = load_file(str(path))
    prefix = WEIGHT_PREFIXES[which]
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{path}: holds no {which!r} weights")
    return state, meta


def save_training_state(
    directory: str | Path,
    *,
    model: dict,
    ema: dict,
    optimizer: dict,
    rng_state: torch.Tensor,
    step: int,
    meta: dict,
    metrics: dict,
    data_state: dict | None = None,
) -> None:
    directory = Path(directory)
    save_block_weights(directory / "block.safetensors", model=model, ema=ema, meta={**meta, "step": step})
    tensors = {"rng.data": rng_state}
    for index, entry in optimizer["state"].items():
        for key, value in entry.items():
            tensors[f"state.{index}.{key}"] = torch.as_tensor(value).contiguous()
    save_file(tensors, str(directory / "optimizer.safetensors"))
    state = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "param_groups": optimizer["param_groups"],
        "metrics": metrics,
        "data_state": data_state,  # where a streamed split was (epoch, position); None for in-memory data
    }
    atomic_write_text(directory / "state.json", json.dumps(state))


def load_training_state(directory: str | Path) -> dict:
    """{"model", "ema", "optimizer" (a torch state dict), "rng_state", "step", "meta", "metrics", "data_state"}."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: training state version {state.get('format_version')} unsupported")
    model, meta = load_block_weights(directory / "block.safetensors", "model")
    ema, _ = load_block_weights(directory / "block.safetensors", "ema")
    tensors = load_file(str(directory / "optimizer.safetensors"))
    optim_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    return {
        "model": model,
        "ema": ema,
        "rng_state": tensors["rng.data"],
        "step": state["step"],
        "optimizer": {"state": optim_state, "param_groups": state["param_groups"]},
        "meta": meta,
        "metrics": state.get("metrics", {}),
        "data_state": state.get("data_state"),
    }


def write_manifest(run_dir: str | Path, manifest: dict) -> None:
    atomic_write_text(Path(run_dir) / "manifest.json", json.dumps(manifest, indent=2))


def load_manifest(run_dir: str | Path) -> dict:
    """Read manifest.json and verify it: every file present with its recorded sha256, ranges contiguous."""
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no manifest.json (is this a finished run directory?)")
    manifest = json.loads(path.read_text())
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise CheckpointError(f"{path}: manifest_version {manifest.get('manifest_version')} unsupported")
    check_contiguous(manifest["boundaries"], manifest["blocks"])
    for block in manifest["blocks"]:
        file = run_dir / block["file"]
        if not file.is_file():
            raise CheckpointError(f"{path}: block {block['index']} file {block['file']} is missing")
        if sha256_file(file) != block["sha256"]:
            raise CheckpointError(f"{path}: block {block['index']} file {block['file']} fails its sha256 check")
    return manifest


def check_contiguous(boundaries: list[float], blocks: list[dict]) -> None:
    """Blocks 0..B-1 must tile [boundaries[0], boundaries[-1]] from the highest noise down, with no gap."""
    num_blocks = len(boundaries) - 1
    if [b["index"] for b in blocks] != list(range(num_blocks)):
        raise CheckpointError(f"blocks {[b['index'] for b in blocks]} are not 0..{num_blocks - 1}")
    for block in blocks:
        i = block["index"]
        expected = (boundaries[num_blocks - 1 - i], boundaries[num_blocks - i])
        if (block["sigma_lo"], block["sigma_hi"]) != expected:
            raise CheckpointError(f"block {i} range {(block['sigma_lo'], block['sigma_hi'])} is not {expected}")
