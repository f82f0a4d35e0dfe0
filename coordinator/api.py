"""HTTP API of the coordinator service (FastAPI; OpenAPI at /docs). It reads and writes Redis through `Store`
only; all Ray dispatch happens in the reconcile loop (coordinator/service.py)."""

from __future__ import annotations

import hmac
import re
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import yaml
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator.api_models import (
    ERROR_DESCRIPTIONS,
    ERROR_TYPES,
    PNG,
    TEXT,
    CancelAccepted,
    Health,
    Predictions,
    RetrainAccepted,
    RunCreated,
    RunDeleted,
    RunSummary,
    RunView,
    config_body_schema,
    errors,
)
from coordinator.metrics import Metrics
from coordinator.records import TERMINAL, block_view, run_view
from coordinator.resolver import Resolver, ResolverBusy
from coordinator.runs import create_run, new_run_id, run_storage
from coordinator.store import Store, TransitionError
from shared.checkpoint import CheckpointError
from shared.config import (
    MAX_SAMPLE_STEPS,
    MAX_SAMPLES_PER_CLASS,
    MAX_SAMPLES_PER_RUN,
    MAX_SEED,
    MAX_STEPS,
    ConfigError,
    parse_config,
)
from shared.data import DataError
from shared.job import previews_dir
from shared.tasks import PREDICT, SAMPLES_PNG, SAMPLES_TXT, TASKS
from shared.tasks.image_generation.samples import sample_grid_png
from shared.tasks.text.outputs import MAX_SAMPLE_TEXTS

PREVIEW_NAME = re.compile(r"^block_\d+_step_\d+\.(png|txt)$")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,159}")  # what new_run_id and the benchmarks make; nothing else
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
IDEMPOTENCY_TTL_S = 24 * 3600
MAX_BODY_BYTES = 1 << 20  # a config is a few KB; anything near a MiB is not one
MAX_CONCURRENT_SAMPLING = 2  # on-demand sampling runs in the coordinator: beyond this, 429
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


MAX_PREDICT_IMAGES = 256  # per request: the body limit (1 MiB) allows about this many 28x28 digits as JSON
MAX_LIST_RUNS = 10_000  # GET /v1/runs answers at most this many (the newest); expiry bounds the rest


class PredictRequest(BaseModel):
    model_config = {"extra": "forbid"}

    images: list[list[list[list[float]]]] = Field(
        ..., min_length=1, max_length=MAX_PREDICT_IMAGES, description="N x C x H x W numbers in [-1, 1]."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the starting noise.")


class RetrainRequest(BaseModel):
    model_config = {"extra": "forbid"}

    from_scratch: StrictBool = Field(True, description="True: new weights; False: resume its checkpoint, train on.")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Total steps for the block (default: the run's).")


def host_name(host: str) -> str:
    """The name of a Host header, without its port (`[::1]:8000` -> `::1`)."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


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
    resolver = resolver or Resolver(roots=())
    app = FastAPI(title="dblocks coordinator", version="1", docs_url=None, redoc_url=None)
    metrics = metrics or Metrics()
    serve_docs_offline(app)

    # One error shape for every 4xx: {"detail": [{"loc", "msg", "type"}]} (coordinator/api_models.py).
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail, headers = exc.detail, dict(getattr(exc, "headers", None) or {})
        if exc.status_code < 500 and not isinstance(detail, list):
            detail = [{"loc": [], "msg": str(detail), "type": ERROR_TYPES.get(exc.status_code, "error")}]
        if exc.status_code == 405:  # Allow: every method of every route on this path, not only the first route's
            headers["Allow"] = ", ".join(sorted(allowed_methods(app, request.scope)))
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        items = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", "invalid"))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": items}, status_code=422)

    def refuse(status: int, msg: str, *, loc: list | None = None, kind: str | None = None, headers=None):
        return HTTPException(
            status, [{"loc": loc or [], "msg": msg, "type": kind or ERROR_TYPES[status]}], headers=headers
        )

    def invalid_config(err: ConfigError) -> HTTPException:
        items = [{**e, "loc": ["body", *e["loc"]]} for e in err.errors]
        return HTTPException(422, [{**e, "type": e["type"] or "invalid_config"} for e in items])

    def too_large() -> JSONResponse:
        msg = f"request body over {MAX_BODY_BYTES} bytes"
        return JSONResponse({"detail": [{"loc": ["body"], "msg": msg, "type": "payload_too_large"}]}, 413)

    app.openapi = lambda: app.openapi_schema or _openapi(app)

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

    def authorised(request: Request) -> None:
        if not api_token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    sampling = threading.BoundedSemaphore(MAX_CONCURRENT_SAMPLING)

    @contextmanager
    def assembled_model_slot(run_id: str):
        """One of the MAX_CONCURRENT_SAMPLING slots for work on a run's assembled model (sampling, prediction):
        429 when none is free; 409 when the run has no assembled model."""
        if not sampling.acquire(blocking=False):
            raise HTTPException(
                429,
                f"{MAX_CONCURRENT_SAMPLING} sampling or prediction requests are running; retry later",
                headers={"Retry-After": "5"},
            )
        try:
            yield
        except CheckpointError as err:
            raise HTTPException(409, f"run {run_id} has no assembled model: {err}") from None
        finally:
            sampling.release()

    def run_or_404(run_id: str):
        if not RUN_ID.fullmatch(run_id):  # never reaches Redis: ids with ':' would name other keys
            raise HTTPException(404, f"no run {run_id[:200]!r}")
        run = store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return run

    # Health endpoints are coroutines: they run on the event loop, never queued behind the worker threads that
    # serve sampling and the other blocking routes.
    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict:
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> dict:
        checks = ready()
        if not all(checks.values()):
            raise HTTPException(503, {"ready": False, **checks})
        return {"ready": True, **checks}

    @app.post(
        "/v1/runs",
        status_code=201,
        dependencies=[Depends(authorised)],
        response_model=RunCreated,
        responses={200: {"model": RunCreated, "description": "The run this Idempotency-Key created before"}}
        | errors(400, 401, 409, 413, 422, 429),
    )
    def submit(
        config: dict,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(pattern=r"^[\x21-\x7e]{1,200}$", description="1 to 200 printable ASCII, no spaces.")
        ] = None,
    ) -> dict:
        """Create a run. With an `Idempotency-Key` header, the same key (within 24 h) gives the same run: 200 and
        its id, nothing created; the same key with a different config is 409."""
        try:
            parsed = parse_config(config)
        except ConfigError as err:
            raise invalid_config(err) from None
        run_id = new_run_id(parsed)
        if idempotency_key is not None:  # claimed before the data is read: a retry never repeats that work
            if not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise refuse(
                    422,
                    "Idempotency-Key: 1 to 200 printable ASCII characters, no spaces",
                    loc=["header", "idempotency-key"],
                )
            first_run, first_hash = store.claim_idempotency_key(
                idempotency_key, run_id, parsed.hash(), IDEMPOTENCY_TTL_S
            )
            if first_run != run_id:
                if first_hash != parsed.hash():
                    raise HTTPException(409, f"Idempotency-Key already used for run {first_run} with another config")
                response.status_code = 200
                return {"id": first_run}
        try:
            resolved = resolver(parsed)  # the data is opened and checked before anything is written
            create_run(resolved, store=store, run_id=run_id, run_dir=runs_dir / run_id, checkpoint_uri=checkpoint_uri)
        except BaseException as err:
            if idempotency_key is not None:
                store.release_idempotency_key(idempotency_key, run_id)
            if isinstance(err, ConfigError):
                raise invalid_config(err) from None
            if isinstance(err, DataError):
                raise refuse(422, str(err), loc=["body"], kind="invalid_data") from None
            if isinstance(err, ResolverBusy):
                raise HTTPException(429, str(err), headers={"Retry-After": "5"}) from None
            raise
        return {"id": run_id}

    @app.get(
        "/v1/runs", dependencies=[Depends(authorised)], response_model=list[RunSummary], responses=errors(401, 422)
    )
    def list_runs(
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_RUNS, description="How many of the newest runs.")] = 1000,
    ) -> list[dict]:
        """The newest `limit` runs (oldest of them first): id, state, number of blocks, creation time."""
        return [
            {"id": run.id, "state": str(run.state), "num_blocks": run.num_blocks, "created_at": run.created_at}
            for run in store.recent_runs(limit)
        ]

    @app.get(
        "/v1/runs/{run_id}", dependencies=[Depends(authorised)], response_model=RunView, responses=errors(401, 404)
    )
    def get_run(run_id: str) -> dict:
        return run_view(run_or_404(run_id), store.get_blocks(run_id))

    @app.get(
        "/v1/runs/{run_id}/events",
        dependencies=[Depends(authorised)],
        response_model=list[dict[str, str]],
        responses=errors(401, 404),
    )
    def events(run_id: str) -> list[dict]:
        run_or_404(run_id)
        return store.events(run_id)

    @app.delete(
        "/v1/runs/{run_id}",
        dependencies=[Depends(authorised)],
        response_model=RunDeleted,
        responses=errors(401, 404, 409),
    )
    def delete_run(run_id: str, files: Annotated[bool, Query()] = False) -> dict:
        """Remove a finished, failed or cancelled run's records (409 while it is pending or running); with
        `files=true` also its run directory on the coordinator (checkpoints on S3 are left to the bucket's own
        lifecycle rules)."""
        run = run_or_404(run_id)
        try:
            store.delete_run(run_id)
        except TransitionError as err:
            raise HTTPException(409, str(err)) from None
        except KeyError:
            raise HTTPException(404, f"no run {run_id!r}") from None
        run_dir = Path(run.run_dir)
        removed = False
        if files and run_dir.is_dir() and run_dir.resolve().parent == runs_dir.resolve():  # only our own runs
            shutil.rmtree(run_dir)
            removed = True
        return {"id": run_id, "deleted": True, "files_deleted": removed}

    @app.post(
        "/v1/runs/{run_id}/cancel",
        status_code=202,
        dependencies=[Depends(authorised)],
        response_model=CancelAccepted,
        responses=errors(401, 404, 409),
    )
    def cancel(run_id: str) -> dict:
        run = run_or_404(run_id)
        if run.state in TERMINAL:
            raise HTTPException(409, f"run {run_id} is already {run.state}")
        try:
            store.request_cancel(run_id)
        except KeyError:  # deleted or expired since it was read
            raise HTTPException(404, f"no run {run_id!r}") from None
        return {"id": run_id, "cancel_requested": True}

    @app.post(
        "/v1/runs/{run_id}/blocks/{index}/retrain",
        status_code=202,
        dependencies=[Depends(authorised)],
        response_model=RetrainAccepted,
        responses=errors(400, 401, 404, 409, 413, 422),
    )
    def retrain(run_id: str, index: int, body: RetrainRequest | None = None) -> dict:
        body = body or RetrainRequest()
        run = run_or_404(run_id)
        if not 0 <= index < run.num_blocks:
            raise HTTPException(404, f"run {run_id} has blocks 0..{run.num_blocks - 1}, not {index}")
        config = parse_config(yaml.safe_load(run.config_yaml))
        steps = body.steps or config.train.steps_for(index)
        current = store.get_blocks(run_id)[index]
        if not body.from_scratch and steps <= current.step:
            raise HTTPException(422, f"steps {steps} must exceed the block's {current.step} to train on")
        try:
            block = store.reopen_block(run_id, index, from_scratch=body.from_scratch, total_steps=steps)
        except TransitionError as err:
            raise HTTPException(409, str(err)) from None
        return {"id": run_id, "block": block_view(block)}

    @app.get(
        "/v1/runs/{run_id}/samples.png",
        dependencies=[Depends(authorised)],
        response_class=Response,
        responses=PNG | errors(401, 404, 409, 422, 429),
    )
    def samples(
        run_id: str,
        num_per_class: Annotated[int | None, Query(ge=1, le=MAX_SAMPLES_PER_CLASS)] = None,
        steps: Annotated[int | None, Query(ge=1, le=MAX_SAMPLE_STEPS)] = None,
        cfg: Annotated[float | None, Query(ge=0, le=20, allow_inf_nan=False)] = None,
        seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
        weights: Annotated[Literal["ema", "raw"] | None, Query()] = None,
    ):
        """The run's samples.png; with any parameter, a fresh grid drawn from the assembled model (one row per
        class), the run's `sample` config filling in what is not given."""
        run = run_or_404(run_id)
        if (num_per_class, steps, cfg, seed, weights) == (None,) * 5:
            path = Path(run.run_dir) / "samples.png"
            if not path.is_file():
                raise HTTPException(404, f"run {run_id} has no samples yet")
            return FileResponse(path, media_type="image/png")
        config = parse_config(yaml.safe_load(run.config_yaml))  # bounded like any config: defaults are too
        outputs = TASKS[config.task].outputs
        if SAMPLES_PNG not in outputs:
            hint = " (its samples are text: samples.txt)" if SAMPLES_TXT in outputs else ""
            raise HTTPException(409, f"run {run_id} is a {config.task} run: it has no image samples{hint}")
        count = max(config.data.num_classes or 0, 1) * (num_per_class or config.sample.num_per_class)
        if count > MAX_SAMPLES_PER_RUN:
            msg = f"{count:,} samples (classes x num_per_class), at most {MAX_SAMPLES_PER_RUN:,}"
            raise refuse(422, msg, loc=["query", "num_per_class"])
        with assembled_model_slot(run_id):
            png = sample_grid_png(
                Path(run.run_dir),
                config,
                num_per_class=num_per_class,
                num_steps=steps,
                cfg_scale=cfg,
                seed=seed,
                weights=weights,
            )
        return Response(png, media_type="image/png")

    @app.get(
        "/v1/runs/{run_id}/samples.txt",
        dependencies=[Depends(authorised)],
        response_class=Response,
        responses=TEXT | errors(401, 404, 409, 422, 429),
    )
    def text_samples(
        run_id: str,
        num: Annotated[int | None, Query(ge=1, le=MAX_SAMPLE_TEXTS)] = None,
        length: Annotated[int | None, Query(ge=1, le=8192)] = None,
        steps: Annotated[int | None, Query(ge=1, le=MAX_SAMPLE_STEPS)] = None,
        seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
        weights: Annotated[Literal["ema", "raw"] | None, Query()] = None,
    ):
        """A text run's samples.txt (one sample per line); with any parameter, fresh samples generated by
        unmasking through the assembled blocks (at most `text.seq_len` symbols each; the same 2-at-once limit as
        image sampling)."""
        from shared.tasks.text.outputs import generate_texts

        run = run_or_404(run_id)
        config = parse_config(yaml.safe_load(run.config_yaml))
        if SAMPLES_TXT not in TASKS[config.task].outputs:
            raise HTTPException(409, f"run {run_id} is a {config.task} run: it has no text samples")
        if length is not None and length > config.text.seq_len:
            raise HTTPException(422, f"length {length}: must be at most the run's text.seq_len {config.text.seq_len}")
        if (num, length, steps, seed, weights) == (None,) * 5:
            path = Path(run.run_dir) / "samples.txt"
            if not path.is_file():
                raise HTTPException(404, f"run {run_id} has no samples yet")
            return FileResponse(path, media_type="text/plain; charset=utf-8")
        with assembled_model_slot(run_id):
            texts = generate_texts(
                Path(run.run_dir),
                config,
                num=num or 8,
                length=length,
                steps=steps,
                seed=config.sample.seed if seed is None else seed,
                weights=weights or config.sample.weights,
            )
        return Response("".join(t + "\n" for t in texts), media_type="text/plain; charset=utf-8")

    @app.post(
        "/v1/runs/{run_id}/predict",
        dependencies=[Depends(authorised)],
        response_model=Predictions,
        responses=errors(400, 401, 404, 409, 413, 422, 429),
    )
    def predict(run_id: str, body: PredictRequest) -> dict:
        """Labels for images, from a finished classification run (same limits as sampling: at most 2 at once)."""
        import torch

        from shared.data import data_shape
        from shared.tasks.classification.outputs import predict_images

        run = run_or_404(run_id)
        config = parse_config(yaml.safe_load(run.config_yaml))
        if PREDICT not in TASKS[config.task].outputs:
            raise HTTPException(409, f"run {run_id} is a {config.task} run: it does not label images")
        info = data_shape(config)
        expected = (info.channels, info.image_size, info.image_size)
        try:
            images = torch.tensor(body.images, dtype=torch.float32)
        except (ValueError, TypeError):  # ragged nesting: rows of different lengths
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", "images"],
                        "msg": f"ragged: expected N x {' x '.join(map(str, expected))}",
                        "type": "invalid_shape",
                    }
                ],
            ) from None
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise HTTPException(
                422, f"images: shape {list(images.shape)}, expected N x {' x '.join(map(str, expected))}"
            )
        if not torch.isfinite(images).all():
            raise HTTPException(422, "images: NaN or infinite values")
        with assembled_model_slot(run_id):
            probs, _ = predict_images(Path(run.run_dir), config, images.clamp(-1, 1), seed=body.seed)
        return {"labels": probs.argmax(dim=1).tolist(), "probabilities": probs.max(dim=1).values.tolist()}

    @app.get(
        "/v1/runs/{run_id}/previews",
        dependencies=[Depends(authorised)],
        response_model=list[str],
        responses=errors(401, 404),
    )
    def previews(run_id: str) -> list[str]:
        run = run_or_404(run_id)
        checkpoints = run_storage(run)  # the workers write previews there while blocks train
        return [n for n in checkpoints.list_names(previews_dir(checkpoints)) if PREVIEW_NAME.fullmatch(n)]

    @app.get(
        "/v1/runs/{run_id}/previews/{name}",  # name: block_<i>_step_<s>.png or .txt (checked; see PREVIEW_NAME)
        dependencies=[Depends(authorised)],
        response_class=Response,
        responses={
            200: {
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "text/plain": {"schema": {"type": "string"}},
                },
                "description": "A preview: PNG, or text for text runs",
            }
        }
        | errors(401, 404, 422),
    )
    def preview(run_id: str, name: Annotated[str, FastAPIPath(pattern=PREVIEW_NAME.pattern, max_length=64)]):
        run = run_or_404(run_id)
        if not PREVIEW_NAME.fullmatch(name):  # a plain file name: nothing can escape the run directory
            raise HTTPException(422, "name must look like block_<i>_step_<s>.png (or .txt for text runs)")
        checkpoints = run_storage(run)
        try:
            data = checkpoints.read_bytes(f"{previews_dir(checkpoints)}/{name}")
        except FileNotFoundError:
            raise HTTPException(404, f"run {run_id} has no preview {name}") from None
        media = "image/png" if name.endswith(".png") else "text/plain; charset=utf-8"
        return Response(data, media_type=media)

    return app


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


def allowed_methods(app: FastAPI, scope: dict) -> set[str]:
    """The methods the routes matching this request's path accept (Starlette answers only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with the run config's schema as the body of POST /v1/runs (docs/openapi.json)."""
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
