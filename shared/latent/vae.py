"""A VAE the user holds: a diffusers `AutoencoderKL` folder (`config.json` and its weights, as SD's, SDXL's, SD3's
and Flux's VAEs are published), loaded locally, never downloaded. Its identity is the sha256 of that folder's
config and weights; its latent scale from its config: latent = (mean - shift) x scaling (per channel
`latents_mean` / `latents_std` where the config gives them), and back for decoding. Encoding keeps the posterior's
mean (deterministic, so a cache is reproducible; docs/latent.md)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.data.errors import DataError

WEIGHT_SUFFIXES = (".safetensors", ".bin")
HASH_CHUNK = 1 << 20
MAX_VAE_FILES = 64  # files hashed in one VAE folder
MAX_VAE_BYTES = 4 << 30  # a VAE's files together (SD's, SDXL's and Flux's are about 335 MB): what one load may read


def vae_files(folder: Path, field: str = "data.vae") -> list[Path]:
    """The files that make the VAE (config and weights), sorted; DataError naming `field` when it is not one."""
    if not folder.is_dir():
        raise DataError(f"{field} {folder}: no such folder (a diffusers AutoencoderKL folder: config.json + weights)")
    if not (folder / "config.json").is_file():
        raise DataError(f"{field} {folder}: no config.json (a diffusers AutoencoderKL folder: config.json + weights)")
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not weights:
        raise DataError(f"{field} {folder}: no weights (*.safetensors or *.bin) beside config.json")
    if len(weights) > MAX_VAE_FILES:
        raise DataError(f"{field} {folder}: {len(weights)} weight files, more than {MAX_VAE_FILES}")
    files = [folder / "config.json", *weights]
    size = sum(p.stat().st_size for p in files)
    if size > MAX_VAE_BYTES:
        raise DataError(f"{field} {folder}: {size:,} bytes of config and weights, more than a VAE's {MAX_VAE_BYTES:,}")
    return files


def vae_sha256(folder: Path, field: str = "data.vae") -> str:
    """The VAE's identity: sha256 over its files' names and bytes, in name order."""
    digest = hashlib.sha256()
    for path in vae_files(folder, field):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LatentScale:
    """latent = (mean - shift) * scaling / std, per channel where the VAE's config gives `latents_mean`/`_std`."""

    scaling: float
    shift: tuple[float, ...]  # one value for every channel, or one per channel
    std: tuple[float, ...]

    @classmethod
    def from_config(cls, config: dict) -> LatentScale:
        scaling = float(config.get("scaling_factor") or 1.0)
        if config.get("latents_mean") and config.get("latents_std"):
            return cls(scaling, tuple(map(float, config["latents_mean"])), tuple(map(float, config["latents_std"])))
        return cls(scaling, (float(config.get("shift_factor") or 0.0),), (1.0,))

    def _view(self, values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def to_latent(self, mean: torch.Tensor) -> torch.Tensor:
        return (mean - self._view(self.shift, mean)) * self.scaling / self._view(self.std, mean)

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self._view(self.std, latent) / self.scaling + self._view(self.shift, latent)


class Vae:
    """A loaded VAE: `encode` images in [-1, 1] to scaled latents, `decode` back; `downsample` and `channels`
    give the latent shape of an image size."""

    def __init__(self, folder: Path, model, sha256: str):
        self.folder, self.model, self.sha256 = folder, model, sha256
        config = dict(model.config)
        self.scale = LatentScale.from_config(config)
        self.channels = int(config["latent_channels"])
        self.image_channels = int(config["in_channels"])
        self.downsample = 2 ** (len(config["block_out_channels"]) - 1)

    @classmethod
    def load(cls, folder: str | Path, *, expect_sha256: str | None = None, field: str = "data.vae") -> Vae:
        folder = Path(folder)
        sha = vae_sha256(folder, field)
        if expect_sha256 is not None and sha != expect_sha256:
            raise DataError(
                f"{field} {folder}: this VAE's sha256 is {sha[:16]}..., the latents were encoded by "
                f"{expect_sha256[:16]}... (a different VAE decodes them to noise)"
            )
        return cls(folder, load_autoencoder(folder, field), sha)

    def latent_size(self, image_size: int) -> int:
        if image_size % self.downsample:
            raise DataError(f"image size {image_size}: the VAE downsamples by {self.downsample}; use a multiple of it")
        return image_size // self.downsample

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, latent channels, H / downsample, W / downsample) scaled latents."""
        mean = self.model.encode(images.to(self.device, torch.float32)).latent_dist.mean
        return self.scale.to_latent(mean).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (N, C, H, W), in batches."""
        out = []
        for part in latents.split(batch_size):
            raw = self.scale.from_latent(part.to(self.device, torch.float32))
            out.append(self.model.decode(raw).sample.clamp(-1, 1).float().cpu())
        return torch.cat(out) if out else latents.new_zeros((0, self.image_channels, 0, 0))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        """What a latent cache and a run record of their VAE."""
        return {
            "path": str(self.folder),
            "sha256": self.sha256,
            "latent_channels": self.channels,
            "downsample": self.downsample,
            "scale": {"scaling": self.scale.scaling, "shift": list(self.scale.shift), "std": list(self.scale.std)},
        }


def load_autoencoder(folder: Path, field: str):
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise DataError(f"{field}: reading a VAE needs diffusers (pip install 'dblocks[latent]')") from None
    kind = json.loads((folder / "config.json").read_text()).get("_class_name")
    if kind not in (None, "AutoencoderKL"):
        raise DataError(f"{field} {folder}: a {kind}, expected a diffusers AutoencoderKL")
    try:
        model = AutoencoderKL.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise DataError(f"{field} {folder}: not a loadable AutoencoderKL ({err})") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.eval().requires_grad_(False).to(device)


@functools.lru_cache(maxsize=2)
def cached_vae(folder: str, sha256: str) -> Vae:
    """The run's VAE, loaded once per process (sampling, evaluation and pictures all decode with it)."""
    return Vae.load(folder, expect_sha256=sha256)
