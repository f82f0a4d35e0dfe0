"""What every `dblocks` command shares: option types, errors that exit 2 naming the field, config loading, and
the one place that builds the store and the Ray dispatcher from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import yaml

from shared.config import Config, ConfigError, load_config, parse_config

if TYPE_CHECKING:
    from coordinator.dispatch import RayDispatcher
    from coordinator.settings import Settings
    from coordinator.store import Store

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: section.field=value (repeatable).")]
ServerOpt = Annotated[str, typer.Option("--server", envvar="DBLOCKS_SERVER", help="Coordinator URL.")]
ResultsOpt = Annotated[Path, typer.Option(help="Folder for the JSON result.")]
JsonOpt = Annotated[bool, typer.Option("--json")]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load(path: Path, overrides: list[str] | None, *, resolve: bool = True) -> Config:
    """The config, validated; with `resolve`, its data source opened and checked too (shared/data/resolve.py), so
    bad data stops here, before anything is written or started. A client submitting to a service leaves that to
    the service, which may see data this machine does not."""
    from coordinator.settings import Settings
    from shared.data import DataError
    from shared.latent.cache import use_cache_root
    from shared.tasks import resolve_data

    use_cache_root(Settings.from_env().latent_cache)  # where a run on images and a VAE keeps its latents
    try:
        config = load_config(path, overrides or [])
        return resolve_data(config) if resolve else config
    except (ConfigError, DataError) as err:
        fail(str(err))


def run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        fail(f"{run_dir} is not a run directory (no config.yaml)")
    return parse_config(yaml.safe_load(path.read_text()), stored=True)


def open_store(settings: Settings) -> Store:
    from coordinator.store import Store, connect

    return Store(connect(settings.redis_url, settings.runs_dir / ".redis"), settings.key_prefix)


def open_dispatcher(settings: Settings) -> RayDispatcher:
    """A connected dispatcher: RAY_ADDRESS's cluster, or a local one of our own."""
    from coordinator.dispatch import RayDispatcher

    dispatcher = RayDispatcher(
        address=settings.ray_address, auth_mode=settings.ray_auth_mode, namespace=settings.key_prefix
    )
    dispatcher.connect()
    return dispatcher


def client(server: str):
    """The typed API client (coordinator/client.py) for `server`, with DBLOCKS_API_TOKEN when set."""
    from coordinator.client import ServiceClient
    from coordinator.settings import Settings

    return ServiceClient(server, token=Settings.from_env().api_token)


@contextmanager
def answered() -> Iterator[None]:
    """Exit 1 with the server's error items (`field: message`), or with why the server could not be reached."""
    import httpx

    from coordinator.client import ApiError

    try:
        yield
    except ApiError as err:
        fail(str(err), 1)
    except httpx.TransportError as err:
        fail(f"cannot reach the service: {type(err).__name__}: {err}", 1)
