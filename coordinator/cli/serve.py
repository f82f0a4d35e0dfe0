"""`dblocks serve`: the coordinator service (HTTP API + the reconcile loop that owns all Ray dispatch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.apps import app
from coordinator.cli.common import LOOPBACK, fail, open_dispatcher, open_store


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    ray_node: Annotated[
        bool,
        typer.Option(
            "--ray-node",
            help="Join RAY_ADDRESS as a Ray node (no CPUs, GPUs or memory offered) before "
            "connecting, and live and die with it: needed wherever this host runs no Ray "
            "node, as in the compose coordinator container.",
        ),
    ] = False,
) -> None:
    """Run the coordinator service: HTTP API + the reconcile loop that owns all Ray dispatch.

    Environment: REDIS_URL, RAY_ADDRESS, DBLOCKS_API_TOKEN, DBLOCKS_STORAGE, DBLOCKS_DATA_ROOTS (default ./data).
    Example: dblocks serve --port 8000   (in a container: RAY_ADDRESS=ray-head:6380 dblocks serve --ray-node)
    """
    import threading

    import uvicorn

    from coordinator.api import create_app
    from coordinator.metrics import Metrics
    from coordinator.service import Coordinator
    from coordinator.store import close_embedded

    settings = checked_settings(host, ray_node)
    resolver = data_resolver(settings)
    store = open_store(settings)
    client = store.client
    node, node_exit = joined_node(settings.ray_address) if ray_node else (None, [])
    dispatcher = open_dispatcher(settings)
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, addr=settings.metrics_host)
    coordinator = Coordinator(
        store=store,
        dispatcher=dispatcher,
        log=typer.echo,
        poll_s=settings.poll_s,
        lease_ttl_s=settings.lease_ttl_s,
        max_in_flight=settings.max_in_flight,
        metrics=metrics,
        retention_s=settings.run_retention_s,
    )
    stop = threading.Event()
    loop = threading.Thread(target=coordinator.run_forever, args=(stop,), name="reconcile", daemon=True)
    loop.start()

    api = create_app(
        store=store,
        runs_dir=settings.runs_dir,
        api_token=settings.api_token,
        ready=readiness(client, loop, coordinator, dispatcher, node, settings.poll_s),
        metrics=metrics,
        checkpoint_uri=settings.checkpoint_uri,
        resolver=resolver,
        allowed_hosts=(host, *LOOPBACK, *settings.allowed_hosts),
    )
    roots = "any file" if settings.data_roots is None else ", ".join(settings.data_roots)
    typer.echo(f"dblocks coordinator on http://{host}:{port} (runs {settings.runs_dir}; data under {roots})")
    try:
        uvicorn.run(api, host=host, port=port, log_level="warning")
    finally:
        stop.set()
        api.state.context.model_work.shutdown()
        loop.join(timeout=30)
        dispatcher.shutdown()
        if node is not None:
            node.stop()
        close_embedded(client)
    if node is not None and node_exit:  # the node died under us: a non-zero exit restarts the container
        raise typer.Exit(1)


def readiness(client, loop, coordinator, dispatcher, node, poll_s: float):
    """/readyz's checks: Redis answers, Ray is reachable, the reconcile loop completes ticks (a tick stuck for a
    minute, or 30 poll intervals, is not), and this host's Ray node lives (with --ray-node)."""

    def ready() -> dict[str, bool]:
        try:
            redis_ok = bool(client.ping())
        except Exception:
            redis_ok = False
        loop_ok = loop.is_alive() and coordinator.healthy(max(60.0, 30 * poll_s))
        checks = {"redis": redis_ok, "ray": dispatcher.ready(), "reconcile_loop": loop_ok}
        return {**checks, "ray_node": node.alive()} if node is not None else checks

    return ready


def checked_settings(host: str, ray_node: bool):
    """The environment's settings, or exit 2 naming what refuses them: no token beyond loopback, a weak secret,
    --ray-node without RAY_ADDRESS."""
    from coordinator.settings import Settings, weak_secrets

    try:
        settings = Settings.from_env()
    except ValueError as err:
        fail(str(err))
    if host not in LOOPBACK and not settings.api_token:
        fail(f"--host {host}: refusing to serve beyond loopback without DBLOCKS_API_TOKEN")
    weak = weak_secrets(settings)
    if weak:
        fail("refusing to start with weak secrets: " + "; ".join(weak))
    if ray_node and not settings.ray_address:
        fail("--ray-node: set RAY_ADDRESS to the cluster to join (without it, serve starts its own local cluster)")
    return settings


def data_resolver(settings):
    """The resolver of submitted data under the settings' roots (the default root created; `*` warned about), its
    forkserver started now rather than at the first submit."""
    from coordinator.resolver import Resolver
    from coordinator.settings import DEFAULT_DATA_ROOT

    if settings.data_roots is None:
        typer.echo(
            "WARNING: DBLOCKS_DATA_ROOTS=* — API callers may train on, and read back, ANY file this service can read",
            err=True,
        )
    elif settings.data_roots == (str(Path(DEFAULT_DATA_ROOT).absolute()),):
        Path(DEFAULT_DATA_ROOT).mkdir(exist_ok=True)
    resolver = Resolver(settings.data_roots, latent_cache=str(settings.latent_cache))
    resolver.warm()
    return resolver


def joined_node(address: str):
    """This host joined to the cluster as a Ray node that offers nothing, and the exit codes it dies with (the
    service stops when it does)."""
    import signal

    from coordinator.ray_node import RayNode, RayNodeError

    node = RayNode(address)
    try:
        node.start()
    except RayNodeError as err:
        fail(f"--ray-node: {err}")
    node_exit: list[int] = []
    node.watch(
        lambda code: (
            node_exit.append(code),
            typer.echo(f"ray node exited ({code}); stopping", err=True),
            os.kill(os.getpid(), signal.SIGTERM),
        )
    )
    return node, node_exit
