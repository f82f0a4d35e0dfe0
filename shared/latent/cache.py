"""The latent caches the service builds: when a run names a source of images and `data.vae`, its data is the cache
`<DBLOCKS_LATENT_CACHE>/<key>` (the service's setting), the key a hash of what the latents depend on (the source's
listing, the VAE's sha256, the transform, the mirrors), so every run on the same images and VAE shares one cache.
Nobody chooses where a cache is written: the folder is the operator's, the name a digest.

The first job that reads the run's data builds the cache (`ensure_latents`, called by the data layer when a split is
opened), under an exclusive lock on `<key>.lock` beside it: the run's other blocks, started at the same moment,
wait for it, then read the finished cache. A job killed mid-encode leaves its finished parts; the next holder of
the lock (its retry, or another block) resumes the encode from them (`shared/latent/encode.py`)."""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

from shared.latent.encode import MANIFEST_FILE, EncodeJob, encode_source

_ROOT = [Path.home() / ".cache" / "dblocks" / "latents"]  # the service's setting (use_cache_root), once per process


def use_cache_root(path: str | Path) -> None:
    """Where this process resolves new caches to: the service's DBLOCKS_LATENT_CACHE (coordinator/settings.py), a
    folder every node mounts at the same path (the workers build and read the caches there)."""
    _ROOT[0] = Path(path)


def cache_root() -> Path:
    return _ROOT[0]


def cache_key(source: str, listing: list[tuple[str, int]], vae_sha256: str, transform: dict, flip: bool) -> str:
    """The cache's name: a digest of everything its latents depend on."""
    facts = {"source": source, "listing": listing, "vae": vae_sha256, "transform": transform, "flip": flip}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def ensure_latents(data) -> None:
    """Build the run's latent cache if it is not built yet (`data.encoded_from` set), one builder at a time."""
    if data.encoded_from is None:
        return
    from shared.latent.vae import Vae

    folder = Path(data.source)
    if (folder / MANIFEST_FILE).is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
        if (folder / MANIFEST_FILE).is_file():  # built while this job waited
            return
        job = EncodeJob(source=data.encoded_from, image_size=data.encoded_size, resize=data.resize, flip=data.flip,
                        image_column=data.image_column, label_column=data.label_column)  # fmt: skip
        encode_source(job, Vae.load(data.vae, expect_sha256=data.vae_sha256), folder)
