"""HTTP API of the coordinator service (FastAPI; OpenAPI at /docs). It reads and writes Redis through `Store`
only; all Ray dispatch happens in the reconcile loop (coordinator/service.py). `create_app` only assembles: the edge
(edge.py: errors, body limit, Host check, metrics, token, docs), health, the runs (runs.py) and what runs serve
(artefacts.py), all sharing one context (context.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException

from coordinator.api import artefacts, runs
from coordinator.api.context import ApiContext
from coordinator.api.edge import (
    LOOPBACK_HOSTS,
    install_error_shape,
    install_middlewares,
    openapi_document,
    serve_docs_offline,
)
from coordinator.api_models import Health
from coordinator.metrics import Metrics
from coordinator.resolver import Resolver
from coordinator.store import Store

__all__ = ["LOOPBACK_HOSTS", "create_app"]


def health_router(ready: Callable[[], dict[str, bool]]) -> APIRouter:
    """Health endpoints are coroutines: they run on the event loop, never queued behind the worker threads that
    serve sampling and the other blocking routes."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health)
    async def healthz() -> dict:
        return {"ok": True}

    @router.get("/readyz")
    async def readyz() -> dict:
        checks = ready()
        if not all(checks.values()):
            raise HTTPException(503, {"ready": False, **checks})
        return {"ready": True, **checks}

    return router


def create_app(
    *,
    store: Store,
    runs_dir: Path,
    api_token: str | None,
    ready: Callable[[], dict[str, bool]],
    metrics: Metrics | None = None,
    checkpoint_uri: str | None = None,
    resolver: Resolver | None = None,
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
) -> FastAPI:
    """`runs_dir`: run directories (local); `checkpoint_uri`: where new runs keep checkpoints (default: their
    run directory); `resolver`: reads and checks the data a submitted config names (default: no data roots, so
    only built-in data); `allowed_hosts`: the Host names answered without a token (others: 421)."""
    app = FastAPI(title="dblocks coordinator", version="1", docs_url=None, redoc_url=None)
    serve_docs_offline(app)
    app.openapi = lambda: app.openapi_schema or openapi_document(app)
    install_middlewares(app, api_token=api_token, allowed_hosts=allowed_hosts, metrics=metrics or Metrics())
    app.state.api_token = api_token
    app.state.context = ApiContext(
        store=store,
        runs_dir=runs_dir,
        resolver=resolver or Resolver(roots=()),
        ready=ready,
        checkpoint_uri=checkpoint_uri,
    )
    routers = [health_router(ready), runs.router, artefacts.router]
    for router in routers:
        app.include_router(router)
    install_error_shape(app, routes=lambda: [route for router in routers for route in router.routes])
    return app
