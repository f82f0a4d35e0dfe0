"""The runs: create (with its data resolved first, out of process), list, read, events, delete, cancel, retrain."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from pydantic import BaseModel, Field, StrictBool

from coordinator.api.context import Context, invalid_config, refuse
from coordinator.api.edge import authorised
from coordinator.api_models import CancelAccepted, RetrainAccepted, RunCreated, RunDeleted, RunSummary, RunView, errors
from coordinator.records import TERMINAL, block_view, run_view
from coordinator.resolver import ResolverBusy
from coordinator.runs import create_run, new_run_id
from coordinator.store import TransitionError
from shared.config import MAX_STEPS, ConfigError, parse_config
from shared.data import DataError

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
IDEMPOTENCY_TTL_S = 24 * 3600
MAX_LIST_RUNS = 10_000  # GET /v1/runs answers at most this many (the newest); expiry bounds the rest


class RetrainRequest(BaseModel):
    model_config = {"extra": "forbid"}

    from_scratch: StrictBool = Field(True, description="True: new weights; False: resume its checkpoint, train on.")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Total steps for the block (default: the run's).")


router = APIRouter()


@router.post(
    "/v1/runs",
    status_code=201,
    dependencies=[Depends(authorised)],
    response_model=RunCreated,
    responses={200: {"model": RunCreated, "description": "The run this Idempotency-Key created before"}}
    | errors(400, 401, 409, 413, 422, 429),
)
def submit(
    ctx: Context,
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
        first_run, first_hash = ctx.store.claim_idempotency_key(
            idempotency_key, run_id, parsed.hash(), IDEMPOTENCY_TTL_S
        )
        if first_run != run_id:
            if first_hash != parsed.hash():
                raise HTTPException(409, f"Idempotency-Key already used for run {first_run} with another config")
            response.status_code = 200
            return {"id": first_run}
    try:
        resolved = ctx.resolver(parsed)  # the data is opened and checked before anything is written
        run_dir = ctx.runs_dir / run_id
        create_run(resolved, store=ctx.store, run_id=run_id, run_dir=run_dir, checkpoint_uri=ctx.checkpoint_uri)
    except BaseException as err:
        if idempotency_key is not None:
            ctx.store.release_idempotency_key(idempotency_key, run_id)
        if isinstance(err, ConfigError):
            raise invalid_config(err) from None
        if isinstance(err, DataError):
            raise refuse(422, str(err), loc=["body"], kind="invalid_data") from None
        if isinstance(err, ResolverBusy):
            raise HTTPException(429, str(err), headers={"Retry-After": "5"}) from None
        raise
    return {"id": run_id}


@router.get("/v1/runs", dependencies=[Depends(authorised)], response_model=list[RunSummary], responses=errors(401, 422))
def list_runs(
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_RUNS, description="How many of the newest runs.")] = 1000,
) -> list[dict]:
    """The newest `limit` runs (oldest of them first): id, state, number of blocks, creation time."""
    return [
        {"id": run.id, "state": str(run.state), "num_blocks": run.num_blocks, "created_at": run.created_at}
        for run in ctx.store.recent_runs(limit)
    ]


@router.get("/v1/runs/{run_id}", dependencies=[Depends(authorised)], response_model=RunView, responses=errors(401, 404))
def get_run(ctx: Context, run_id: str) -> dict:
    run = ctx.run_or_404(run_id)
    return run_view(run, ctx.store.get_blocks(run_id, run.num_blocks))  # two round trips


@router.get(
    "/v1/runs/{run_id}/events",
    dependencies=[Depends(authorised)],
    response_model=list[dict[str, str]],
    responses=errors(401, 404),
)
def events(ctx: Context, run_id: str) -> list[dict]:
    ctx.run_or_404(run_id)
    return ctx.store.events(run_id)


@router.delete(
    "/v1/runs/{run_id}",
    dependencies=[Depends(authorised)],
    response_model=RunDeleted,
    responses=errors(401, 404, 409),
)
def delete_run(ctx: Context, run_id: str, files: Annotated[bool, Query()] = False) -> dict:
    """Remove a finished, failed or cancelled run's records (409 while it is pending or running); with
    `files=true` also its run directory on the coordinator (checkpoints on S3 are left to the bucket's own
    lifecycle rules)."""
    run = ctx.run_or_404(run_id)
    try:
        ctx.store.delete_run(run_id)
    except TransitionError as err:
        raise HTTPException(409, str(err)) from None
    except KeyError:
        raise HTTPException(404, f"no run {run_id!r}") from None
    run_dir = Path(run.run_dir)
    removed = False
    if files and run_dir.is_dir() and run_dir.resolve().parent == ctx.runs_dir.resolve():  # only our own runs
        shutil.rmtree(run_dir)
        removed = True
    return {"id": run_id, "deleted": True, "files_deleted": removed}


@router.post(
    "/v1/runs/{run_id}/cancel",
    status_code=202,
    dependencies=[Depends(authorised)],
    response_model=CancelAccepted,
    responses=errors(401, 404, 409),
)
def cancel(ctx: Context, run_id: str) -> dict:
    run = ctx.run_or_404(run_id)
    if run.state in TERMINAL:
        raise HTTPException(409, f"run {run_id} is already {run.state}")
    try:
        ctx.store.request_cancel(run_id)
    except KeyError:  # deleted or expired since it was read
        raise HTTPException(404, f"no run {run_id!r}") from None
    return {"id": run_id, "cancel_requested": True}


@router.post(
    "/v1/runs/{run_id}/blocks/{index}/retrain",
    status_code=202,
    dependencies=[Depends(authorised)],
    response_model=RetrainAccepted,
    responses=errors(400, 401, 404, 409, 413, 422),
)
def retrain(ctx: Context, run_id: str, index: int, body: RetrainRequest | None = None) -> dict:
    body = body or RetrainRequest()
    run = ctx.run_or_404(run_id)
    if not 0 <= index < run.num_blocks:
        raise HTTPException(404, f"run {run_id} has blocks 0..{run.num_blocks - 1}, not {index}")
    config = ctx.config_of(run)
    steps = body.steps or config.train.steps_for(index)
    current = ctx.store.get_blocks(run_id)[index]
    if not body.from_scratch and steps <= current.step:
        raise HTTPException(422, f"steps {steps} must exceed the block's {current.step} to train on")
    try:
        block = ctx.store.reopen_block(run_id, index, from_scratch=body.from_scratch, total_steps=steps)
    except TransitionError as err:
        raise HTTPException(409, str(err)) from None
    return {"id": run_id, "block": block_view(block)}
