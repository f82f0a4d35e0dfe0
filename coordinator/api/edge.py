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


def install_middlewares(app: FastAPI, *, api_token: str | None, allowed_hosts: tuple[str, ...], metrics: Metrics):
    """The body limit (innermost), the Host check, the request metrics (outermost)."""

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return too_large()
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return too_large()
            request._body = body
        return await call_next(request)

    hosts = {h.lower() for h in allowed_hosts}

    @app.middleware("http")
    async def known_host(request: Request, call_next):
        """Without a token, only requests addressed to this service's own names: a web page the operator opens
        cannot reach the API through a name it controls (DNS rebinding)."""
        if not api_token and host_name(request.headers.get("host", "")) not in hosts:
            msg = "Host is not one this service answers without a token (DBLOCKS_ALLOWED_HOSTS)"
            return JSONResponse({"detail": [{"loc": ["header", "host"], "msg": msg, "type": ERROR_TYPES[421]}]}, 421)
        return await call_next(request)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the route template: bounded label values
        metrics.api_requests.labels(request.method, path, str(response.status_code)).inc()
        metrics.api_latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response


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
