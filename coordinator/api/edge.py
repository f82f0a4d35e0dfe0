"""The API's edge, before and around every route: one error shape for every 4xx, the body limit, the Host check of
a service without a token, the request metrics, the bearer token, the offline docs page and the OpenAPI document."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from coordinator.api_models import ERROR_DESCRIPTIONS, ERROR_TYPES, config_body_schema
from coordinator.metrics import Metrics

MAX_BODY_BYTES = 1 << 20  # a config is a few KB; anything near a MiB is not one
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(host: str) -> str:
    """The name of a Host header, without its port (`[::1]:8000` -> `::1`)."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def authorised(request: Request) -> None:
    """The dependency every /v1 route has: `Authorization: Bearer <token>` (constant-time), when the app has a token
    (`app.state.api_token`)."""
    api_token = request.app.state.api_token
    if not api_token:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api_token}".encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def install_error_shape(app: FastAPI, routes: Callable[[], Iterable[BaseRoute]]) -> None:
    """One error shape for every 4xx: {"detail": [{"loc", "msg", "type"}]} (coordinator/api_models.py). `routes`:
    every route of the API, for the `Allow` header of a 405."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail, headers = exc.detail, dict(getattr(exc, "headers", None) or {})
        if exc.status_code < 500 and not isinstance(detail, list):
            detail = [{"loc": [], "msg": str(detail), "type": ERROR_TYPES.get(exc.status_code, "error")}]
        if exc.status_code == 405:  # Allow: every method of every route on this path, not only the first route's
            headers["Allow"] = ", ".join(sorted(allowed_methods(routes(), request.scope)))
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        items = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", "invalid"))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": items}, status_code=422)


def too_large() -> JSONResponse:
    msg = f"request body over {MAX_BODY_BYTES} bytes"
    return JSONResponse({"detail": [{"loc": ["body"], "msg": msg, "type": "payload_too_large"}]}, 413)


def wrong_host() -> JSONResponse:
    msg = "Host is not one this service answers without a token (DBLOCKS_ALLOWED_HOSTS)"
    return JSONResponse({"detail": [{"loc": ["header", "host"], "msg": msg, "type": ERROR_TYPES[421]}]}, 421)


class Edge:
    """What happens to every request before its route, as one pure ASGI middleware (Starlette's
    `@app.middleware("http")` runs each layer in a task group of its own and streams every response through a
    memory channel: three of them were most of a status read's server time). In order: the request metrics
    (outermost, so a refusal is counted too), the Host check of a service without a token (DNS rebinding: a web
    page the operator opens cannot reach the API through a name it controls), the body limit."""

    def __init__(self, app, *, api_token: str | None, allowed_hosts: tuple[str, ...], metrics: Metrics):
        self.app, self.api_token, self.metrics = app, api_token, metrics
        self.hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def observed(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.admitted(scope, receive, observed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # the route template: bounded label values
            self.metrics.api_requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.api_latency.labels(scope["method"], path).observe(time.perf_counter() - started)

    async def admitted(self, scope, receive, send):
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as Starlette's Headers.get
        if not self.api_token and host_name(headers.get(b"host", b"").decode("latin-1")) not in self.hosts:
            return await wrong_host()(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return await too_large()(scope, receive, send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):  # chunked: read it all, bounded
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > MAX_BODY_BYTES:
                    return await too_large()(scope, receive, send)
            receive = replay(body, receive)
        await self.app(scope, receive, send)


def replay(body: bytes, receive):
    """A `receive` that gives `body` once, then whatever the connection says next (its disconnect)."""
    sent = False

    async def again():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def install_middlewares(app: FastAPI, *, api_token: str | None, allowed_hosts: tuple[str, ...], metrics: Metrics):
    """The edge (`Edge`): request metrics, the Host check, the body limit."""
    app.add_middleware(Edge, api_token=api_token, allowed_hosts=allowed_hosts, metrics=metrics)


DOCS_ASSETS = "/docs-assets"


def serve_docs_offline(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from assets this service ships (the `fastapi-offline` wheel's copies of
    Swagger UI 5 and ReDoc) instead of a public CDN: the API's docs page works on a cluster without internet."""
    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def allowed_methods(routes: Iterable[BaseRoute], scope: dict) -> set[str]:
    """The methods the routes matching this request's path accept (Starlette answers only the first route's)."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def openapi_document(app: FastAPI) -> dict:
    """FastAPI's document, with the run config's schema as the body of POST /v1/runs (docs/generated/openapi.json)."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for path in schema["paths"].values():  # FastAPI's own 422 model is replaced by the one error shape
        for operation in path.values():
            response = operation.get("responses", {}).get("422")
            if response is not None:
                response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
                response["description"] = ERROR_DESCRIPTIONS[422]
    schemas = schema.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    app.openapi_schema = config_body_schema(schema)
    return app.openapi_schema
