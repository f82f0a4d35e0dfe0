"""What every `dblocks` command shares: option types, errors that exit 2 naming the field, config loading, and
the one place that builds the store and the Ray dispatcher from the environment."""

from __future__ import annotations

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
    from shared.data import DataError, resolve_data

    try:
        config = load_config(path, overrides or [])
        return resolve_data(config) if resolve else config
    except (ConfigError, DataError) as err:
        fail(str(err))


def run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        fail(f"{run_dir} is not a run directory (no config.yaml)")
    return parse_config(yaml.safe_load(path.read_text()))


def open_store(settings: Settings) -> Store:
    from coordinator.store import Store, connect

    return Store(connect(settings.redis_url, settings.runs_dir / ".redis"), settings.key_prefix)


def open_dispatcher(settings: Settings) -> RayDispatcher:
    """A connected dispatcher: RAY_ADDRESS's cluster, or a local one of our own."""
    from coordinator.dispatch import RayDispatcher

    dispatcher = RayDispatcher(address=settings.ray_address, auth_mode=settings.ray_auth_mode)
    dispatcher.connect()
    return dispatcher


def client(server: str):
    import httpx

    from coordinator.settings import Settings

    token = Settings.from_env().api_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server, headers=headers, timeout=30)


def checked(response) -> dict:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if isinstance(detail, list):  # the API's error items: {"loc", "msg", "type"}
            detail = "; ".join(
                (".".join(str(p) for p in item.get("loc", [])[1:]) + ": " if len(item.get("loc", [])) > 1 else "")
                + str(item.get("msg", item))
                for item in detail
                if isinstance(item, dict)
            )
        fail(f"{response.status_code}: {detail}", 1)
    return response.json()
