"""Reading a trained network's tensors, lazily and by name, from the formats users hold:

- `run`: a finished run directory of this service (`manifest.json` and one `block_0.safetensors`: train.mode
  end_to_end), its EMA or raw weights;
- `diffusers`: a diffusers `DiTTransformer2DModel` folder (`config.json` and `diffusion_pytorch_model.safetensors`),
  as DiT-XL/2 and its relatives are published;
- `dit`: an original DiT / SiT `.pt` file: a state dict, or a training checkpoint holding `ema` and `model`.

Only the tensors a block takes are read (safetensors by name; a `.pt` memory-mapped), so a worker holds its own
slice of a network that need not fit its memory whole. Errors are `InitError`, naming `init.checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from shared.checkpoint import CheckpointError, read_block_meta
from shared.data.errors import DataError


class InitError(DataError):
    """A checkpoint a run cannot start from; the message names the field and the reason. A DataError: what a run
    reads is refused alike (422 from the API, a message from the CLI), its checkpoint as its data."""


DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class Source:
    """A checkpoint's tensors by name. `weights_file` is what its sha256 covers."""

    format: str
    weights_file: Path

    def names(self) -> set[str]:
        raise NotImplementedError

    def tensor(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensor(name).shape)


class SafetensorsSource(Source):
    def __init__(self, path: Path, prefix: str = ""):
        self.weights_file, self.prefix = path, prefix
        try:
            with safe_open(str(path), framework="pt") as f:
                self._names = {k[len(prefix) :] for k in f.keys() if k.startswith(prefix)}
        except (SafetensorError, OSError) as err:
            raise InitError(f"init.checkpoint: {path} is not a readable safetensors file ({err})") from None

    def names(self) -> set[str]:
        return self._names

    def tensor(self, name: str) -> torch.Tensor:
        with safe_open(str(self.weights_file), framework="pt") as f:
            return f.get_tensor(self.prefix + name)

    def shape(self, name: str) -> tuple[int, ...]:
        with safe_open(str(self.weights_file), framework="pt") as f:
            return tuple(f.get_slice(self.prefix + name).get_shape())


class RunSource(SafetensorsSource):
    """An end-to-end run of this service: its one block file, whose metadata says its network and task."""

    format = "run"

    def __init__(self, run_dir: Path, weights: str):
        manifest_path = run_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise InitError(f"init.checkpoint: {manifest_path} is not a readable manifest ({err})") from None
        blocks = manifest.get("blocks", [])
        if manifest.get("mode") != "end_to_end" or len(blocks) != 1:
            raise InitError(
                f"init.checkpoint: {run_dir} is a block-wise run ({len(blocks)} blocks); start from an end-to-end run "
                "(train.mode end_to_end) or an imported model"
            )
        path = run_dir / blocks[0]["file"]
        try:
            self.meta = read_block_meta(path)
        except CheckpointError as err:
            raise InitError(f"init.checkpoint: {err}") from None
        self.manifest = manifest
        super().__init__(path, "ema." if weights == "ema" else "model.")


class DiffusersSource(SafetensorsSource):
    """A diffusers DiTTransformer2DModel folder; `config` is its config.json."""

    format = "diffusers"

    def __init__(self, folder: Path):
        try:
            self.config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise InitError(f"init.checkpoint: {folder}/config.json is not readable JSON ({err})") from None
        if self.config.get("_class_name") != "DiTTransformer2DModel":
            raise InitError(
                f"init.checkpoint: {folder} holds a {self.config.get('_class_name')!r}; the diffusers import reads "
                "DiTTransformer2DModel folders"
            )
        if self.config.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
            raise InitError(f"init.checkpoint: {folder}: norm_type {self.config['norm_type']!r} is not ada_norm_zero")
        if not (folder / DIFFUSERS_WEIGHTS).is_file():
            raise InitError(f"init.checkpoint: {folder} has no {DIFFUSERS_WEIGHTS}")
        super().__init__(folder / DIFFUSERS_WEIGHTS)


class TorchSource(Source):
    """An original DiT/SiT `.pt`: a state dict, or a training checkpoint whose `ema` (or `model`) is one. Loaded
    with `weights_only` (no pickled code runs) and memory-mapped."""

    format = "dit"

    def __init__(self, path: Path, weights: str):
        self.weights_file = path
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # torch raises many kinds for a file that is not a safe state dict
            raise InitError(f"init.checkpoint: {path} is not a readable torch state dict ({err})") from None
        if isinstance(state, dict) and "ema" in state and "model" in state:  # a DiT/SiT training checkpoint
            state = state["ema" if weights == "ema" else "model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InitError(f"init.checkpoint: {path} does not hold a state dict of tensors")
        self.state = state

    def names(self) -> set[str]:
        return set(self.state)

    def tensor(self, name: str) -> torch.Tensor:
        return self.state[name]


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "run"
        if (path / "config.json").is_file():
            return "diffusers"
        raise InitError(
            f"init.checkpoint: {path} is neither a finished run of this service (manifest.json) nor a diffusers "
            "folder (config.json)"
        )
    if path.is_file():
        return "dit"
    raise InitError(f"init.checkpoint: {path} does not exist")


def open_source(path: str | Path, format: str = "auto", weights: str = "ema") -> Source:
    """The checkpoint at `path`, read as `format` (auto: by what the path holds)."""
    path = Path(path)
    format = detect_format(path) if format == "auto" else format
    if format == "run":
        return RunSource(path, weights)
    if format == "diffusers":
        return DiffusersSource(path)
    if format == "dit":
        return TorchSource(path, weights)
    raise InitError(f"init.format {format!r}: expected run, diffusers or dit")
