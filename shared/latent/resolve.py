"""A run's VAE, settled before the run starts: a latent cache names the VAE that encoded it (sha256), and the run
records that VAE's folder and hash (`data.vae`, `data.vae_sha256`), so its samples, pictures and evaluation decode
with exactly that VAE. A service caller names the folder (confined to the data roots like every path); the machine's
own user may leave it to the cache's manifest."""

from __future__ import annotations

from pathlib import Path

from shared.data.errors import DataError
from shared.latent.vae import vae_sha256


def resolve_vae(config, source, *, confined: bool) -> dict:
    """`data.vae` and `data.vae_sha256` for a run on `source` (the opened train source); {} when it is not latent."""
    d = config.data
    if source.format != "latents":
        if d.vae is not None or d.vae_sha256 is not None:
            raise DataError(
                "data.vae: names the VAE of a latent cache, and data.source is not one; encode the images first "
                "(dblocks data encode SOURCE --vae DIR --out DEST), then train on DEST"
            )
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
