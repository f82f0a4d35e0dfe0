"""What every route of the API shares: the store, where run directories live, the data resolver, the slots for work
on assembled models, and the small helpers routes call (a run or 404, a refusal in the one error shape)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import yaml
from fastapi import Depends, HTTPException, Request

from coordinator.api_models import ERROR_TYPES
from coordinator.model_work import ModelWork, WorkerLost, shared_model_work
from coordinator.records import RunRecord
from coordinator.resolver import Resolver
from coordinator.store import Store
from shared.checkpoint import CheckpointError
from shared.config import Config, ConfigError, parse_config
from shared.data.errors import DataError

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,159}")  # what new_run_id and the benchmarks make; nothing else
MAX_CONCURRENT_SAMPLING = 2  # on-demand sampling and prediction at once (in worker processes): beyond this, 429


def refuse(status: int, msg: str, *, loc: list | None = None, kind: str | None = None, headers=None) -> HTTPException:
    """An error in the one shape: `{"detail": [{"loc", "msg", "type"}]}`."""
    return HTTPException(status, [{"loc": loc or [], "msg": msg, "type": kind or ERROR_TYPES[status]}], headers=headers)


def invalid_config(err: ConfigError) -> HTTPException:
    """422 with one item per bad config field, located in the body."""
    items = [{**e, "loc": ["body", *e["loc"]]} for e in err.errors]
    return HTTPException(422, [{**e, "type": e["type"] or "invalid_config"} for e in items])


@dataclass
class ApiContext:
    store: Store
    runs_dir: Path  # run directories (local)
    resolver: Resolver  # reads and checks the data a submitted config names
    ready: Callable[[], dict[str, bool]]  # the readiness checks (/readyz)
    checkpoint_uri: str | None = None  # where new runs keep checkpoints (default: their run directory)
    sampling: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_CONCURRENT_SAMPLING)
    )
    model_work: ModelWork = field(default_factory=shared_model_work)  # where that work runs

    def run_or_404(self, run_id: str) -> RunRecord:
        if not RUN_ID.fullmatch(run_id):  # never reaches Redis: ids with ':' would name other keys
            raise HTTPException(404, f"no run {run_id[:200]!r}")
        run = self.store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return run

    @staticmethod
    def config_of(run: RunRecord) -> Config:
        return parse_config(yaml.safe_load(run.config_yaml), stored=True)  # bounded like any config

    def on_assembled_model(self, run: RunRecord, task: str, method: str, **kwargs):
        """`method` of the run's task's outputs on its assembled model, in a worker process (model_work.py), in one
        of the MAX_CONCURRENT_SAMPLING slots: 429 when none is free; 409 when the run has no assembled model or it
        cannot be decoded; 503 when the worker died."""
        if not self.sampling.acquire(blocking=False):
            raise HTTPException(
                429,
                f"{MAX_CONCURRENT_SAMPLING} sampling or prediction requests are running; retry later",
                headers={"Retry-After": "5"},
            )
        try:
            return self.model_work.call(Path(run.run_dir), run.config_yaml, task, method, **kwargs)
        except CheckpointError as err:
            raise HTTPException(409, f"run {run.id} has no assembled model: {err}") from None
        except DataError as err:  # a latent run whose VAE is no longer where the run recorded it
            raise HTTPException(409, f"run {run.id} cannot be decoded: {err}") from None
        except WorkerLost as err:
            raise refuse(503, str(err), headers={"Retry-After": "5"}) from None
        finally:
            self.sampling.release()


def api_context(request: Request) -> ApiContext:
    """The context of the app serving this request (`create_app` puts it in `app.state`)."""
    return request.app.state.context


Context = Annotated[ApiContext, Depends(api_context)]  # a route's parameter: the context, invisible in the OpenAPI
