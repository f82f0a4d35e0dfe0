"""A run's VAE, settled before the run starts: a latent cache names the VAE that encoded it (sha256), and the run
records that VAE's folder and hash (`data.vae`, `data.vae_sha256`), so its samples, pictures and evaluation decode
with exactly that VAE. A service caller names the folder (confined to the data roots like every path); the machine's
own user may leave it to the cache's manifest.

A run that names a source of images and `data.vae` is one the service encodes (`resolve_encoded`): its images are
checked as any source's, and its data becomes their latent cache (`shared/latent/cache.py`), its shape the VAE's
latent shape, computed from the VAE's config without encoding anything."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.data.errors import DataError
from shared.data.files import ReadLimits
from shared.data.sources import open_source
from shared.latent.cache import cache_key, cache_root
from shared.latent.vae import vae_files, vae_sha256


def resolve_vae(config, source, *, confined: bool) -> dict:
    """`data.vae` and `data.vae_sha256` for a run on `source` (the opened train source); {} when it is not latent."""
    d = config.data
    if source.format != "latents":
        if d.vae_sha256 is not None:
            raise DataError("data.vae_sha256: names the VAE of a latent cache, and data.source is not one")
        return {}
    recorded = source.vae.get("sha256")
    if not isinstance(recorded, str):
        raise DataError(f"{source.uri}/latents.json: names no VAE (vae.sha256)")
    if d.vae_sha256 is not None and d.vae_sha256 != recorded:
        raise DataError(f"data.vae_sha256 {d.vae_sha256[:16]}...: the latents were encoded by {recorded[:16]}...")
    folder = d.vae
    if folder is None:
        if confined:
            raise DataError(
                f"data.vae: the latents at {source.uri} were encoded by the VAE with sha256 {recorded[:16]}...; "
                "name that VAE's folder (under the data roots) in data.vae"
            )
        folder = source.vae.get("path")
        if not isinstance(folder, str) or not Path(folder).is_dir():
            raise DataError(
                f"data.vae: the latents at {source.uri} were encoded by the VAE at {folder} (sha256 "
                f"{recorded[:16]}...), which is not there; set data.vae to that VAE's folder"
            )
    if folder.startswith("s3://"):
        raise DataError(f"data.vae {folder}: must be a local folder or a shared mount, not s3://")
    sha = vae_sha256(Path(folder))
    if sha != recorded:
        raise DataError(
            f"data.vae {folder}: its sha256 is {sha[:16]}..., the latents were encoded by {recorded[:16]}... "
            "(another VAE would decode them to noise)"
        )
    return {"data.vae": folder, "data.vae_sha256": recorded}


@dataclass(frozen=True)
class VaeFacts:
    sha256: str
    image_channels: int
    latent_channels: int
    downsample: int


def vae_facts(folder: str) -> VaeFacts:
    """What the VAE folder says of its shapes (its config.json), and its hash; read without loading it."""
    if folder.startswith("s3://"):
        raise DataError(f"data.vae {folder}: must be a local folder or a shared mount, not s3://")
    path = Path(folder)
    vae_files(path)
    try:
        config = json.loads((path / "config.json").read_text())
        facts = (int(config["in_channels"]), int(config["latent_channels"]), len(config["block_out_channels"]))
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"data.vae {folder}: config.json is not an AutoencoderKL's ({err})") from None
    return VaeFacts(vae_sha256(path), facts[0], facts[1], 2 ** (facts[2] - 1))


def resolve_encoded(config, *, confined: bool, resolve_images: Callable):
    """The config of a run on a source of images encoded by `data.vae`: the images checked by `resolve_images` (as
    pixels of `data.image_size`), then `data.source` the cache of their latents, `data.channels` /
    `data.image_size` the latents' shape, `data.encoded_from` / `data.encoded_size` the images."""
    d = config.data
    if d.test_source is not None:
        raise DataError("data.test_source: a run the service encodes holds out its test split from data.source "
                        "(data.test_fraction); to use a test source, encode both with dblocks data encode")  # fmt: skip
    size = d.encoded_size or d.image_size
    if size is None:
        raise DataError("data.image_size: with data.vae and a source of images, the side in pixels to encode at")
    vae = vae_facts(d.vae)
    if d.vae_sha256 is not None and d.vae_sha256 != vae.sha256:
        raise DataError(f"data.vae_sha256 {d.vae_sha256[:16]}...: data.vae {d.vae} is {vae.sha256[:16]}...")
    if size % vae.downsample:
        raise DataError(f"data.image_size {size}: the VAE downsamples by {vae.downsample}; use a multiple of it")
    pixels = resolve_images(config.with_values({
        "data.source": d.encoded_from or d.source, "data.format": "auto" if d.encoded_from else d.format,
        "data.encoded_from": None, "data.encoded_size": None, "data.vae": None, "data.vae_sha256": None,
        "data.flip": False, "data.image_size": size, "data.channels": vae.image_channels, "data.loader": "auto",
    }), confined=confined).data  # fmt: skip
    options = {"format": pixels.format, "image_column": d.image_column, "label_column": d.label_column}
    source = open_source(pixels.source, **options, limits=ReadLimits(confined=confined))
    listing = [(shard.name, shard.num_records) for shard in source.shards()]
    transform = {"image_size": size, "resize": d.resize, "channels": vae.image_channels}
    folder = cache_root() / cache_key(pixels.source, listing, vae.sha256, transform, d.flip)
    latent_size = size // vae.downsample
    values = {
        "data.source": str(folder), "data.format": "latents", "data.encoded_from": pixels.source,
        "data.encoded_size": size, "data.vae_sha256": vae.sha256, "data.channels": vae.latent_channels,
        "data.image_size": latent_size, "data.num_classes": pixels.num_classes,
    }  # fmt: skip
    if d.loader == "auto":
        records = sum(n for _, n in listing) * (2 if d.flip else 1)
        fits = records * vae.latent_channels * latent_size**2 * 4 <= d.memory_limit_mb * 2**20
        values["data.loader"] = "memory" if fits else "stream"
    if "sigma_data" not in config.noise.model_fields_set:
        values["noise.sigma_data"] = 1.0  # a VAE's scaling factor is chosen for unit-std latents (docs/latent.md)
    return config.with_values(values)
