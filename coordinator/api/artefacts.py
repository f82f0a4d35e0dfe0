"""What a run serves besides its records, each only where the run's task declares it (`Task.outputs`): samples as
PNG or text, fresh ones drawn from the assembled model, labels for given images; and the per-block previews."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as FastAPIPath
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from coordinator.api.context import Context, refuse
from coordinator.api.edge import authorised
from coordinator.api_models import PNG, TEXT, Predictions, errors
from coordinator.runs import run_storage
from shared.config import MAX_SAMPLE_STEPS, MAX_SAMPLES_PER_CLASS, MAX_SAMPLES_PER_RUN, MAX_SEED
from shared.data import data_shape
from shared.images import grid_png
from shared.job import previews_dir
from shared.tasks import PREDICT, PROMPTS, SAMPLES_PNG, SAMPLES_TXT, TASKS

PREVIEW_NAME = re.compile(r"^block_\d+_step_\d+\.(png|txt)$")
MAX_TEXTS = 1000  # texts per sampling request (each task bounds its own work further)
MAX_PROMPT_CHARS = 4096  # characters of a prompt in a query string
MAX_PREDICT_IMAGES = 256  # per request: the body limit (1 MiB) allows about this many 28x28 digits as JSON


class PredictRequest(BaseModel):
    model_config = {"extra": "forbid"}

    images: list[list[list[list[float]]]] = Field(
        ..., min_length=1, max_length=MAX_PREDICT_IMAGES, description="N x C x H x W numbers in [-1, 1]."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the starting noise.")


router = APIRouter()


@router.get(
    "/v1/runs/{run_id}/samples.png",
    dependencies=[Depends(authorised)],
    response_class=Response,
    responses=PNG | errors(401, 404, 409, 422, 429, 503),
)
def samples(
    ctx: Context,
    run_id: str,
    num_per_class: Annotated[int | None, Query(ge=1, le=MAX_SAMPLES_PER_CLASS)] = None,
    steps: Annotated[int | None, Query(ge=1, le=MAX_SAMPLE_STEPS)] = None,
    cfg: Annotated[float | None, Query(ge=0, le=20, allow_inf_nan=False)] = None,
    seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
    weights: Annotated[Literal["ema", "raw"] | None, Query()] = None,
):
    """The run's samples.png; with any parameter, a fresh grid drawn from the assembled model (one row per
    class), the run's `sample` config filling in what is not given."""
    run = ctx.run_or_404(run_id)
    if (num_per_class, steps, cfg, seed, weights) == (None,) * 5:
        path = Path(run.run_dir) / "samples.png"
        if not path.is_file():
            raise HTTPException(404, f"run {run_id} has no samples yet")
        return FileResponse(path, media_type="image/png")
    config = ctx.config_of(run)
    outputs = TASKS[config.task].outputs
    if SAMPLES_PNG not in outputs:
        hint = " (its samples are text: samples.txt)" if SAMPLES_TXT in outputs else ""
        raise HTTPException(409, f"run {run_id} is a {config.task} run: it has no image samples{hint}")
    count = max(config.data.num_classes or 0, 1) * (num_per_class or config.sample.num_per_class)
    if count > MAX_SAMPLES_PER_RUN:
        msg = f"{count:,} samples (classes x num_per_class), at most {MAX_SAMPLES_PER_RUN:,}"
        raise refuse(422, msg, loc=["query", "num_per_class"])
    params = {"num_per_class": num_per_class, "num_steps": steps, "cfg_scale": cfg, "seed": seed, "weights": weights}
    images, labels = ctx.on_assembled_model(run, config.task, "sample_images", **params)
    png = grid_png(images, len(labels) // max(1, data_shape(config).num_classes))  # a row per class
    return Response(png, media_type="image/png")


@router.get(
    "/v1/runs/{run_id}/samples.txt",
    dependencies=[Depends(authorised)],
    response_class=Response,
    responses=TEXT | errors(401, 404, 409, 422, 429, 503),
)
def text_samples(
    ctx: Context,
    run_id: str,
    num: Annotated[int | None, Query(ge=1, le=MAX_TEXTS)] = None,
    length: Annotated[int | None, Query(ge=1, le=8192)] = None,
    steps: Annotated[int | None, Query(ge=1, le=MAX_SAMPLE_STEPS)] = None,
    seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
    weights: Annotated[Literal["ema", "raw"] | None, Query()] = None,
    prompt: Annotated[str | None, Query(max_length=MAX_PROMPT_CHARS)] = None,
    temperature: Annotated[float | None, Query(ge=0, le=10)] = None,
):
    """A text run's samples.txt (one sample per line); with any parameter, fresh samples generated through the
    assembled blocks (each task bounds its own: a masked-text run's length is at most its sequence length, an
    autoregressive run's num x length at most 32,768 tokens; 422 past them; the same 2-at-once limit as image
    sampling). A run whose task continues prompts (autoregressive) takes `prompt` (each line is the prompt and its
    continuation of `length` tokens, newlines escaped as `\\n`) and `temperature` (0: the most likely token)."""
    run = ctx.run_or_404(run_id)
    config = ctx.config_of(run)
    outputs = TASKS[config.task].outputs
    if SAMPLES_TXT not in outputs:
        raise HTTPException(409, f"run {run_id} is a {config.task} run: it has no text samples")
    prompted = {k: v for k, v in {"prompt": prompt, "temperature": temperature}.items() if v is not None}
    if prompted and PROMPTS not in outputs:
        raise HTTPException(422, f"{', '.join(prompted)}: run {run_id} is a {config.task} run; it takes no prompts")
    if not prompted and (num, length, steps, seed, weights) == (None,) * 5:
        path = Path(run.run_dir) / "samples.txt"
        if not path.is_file():
            raise HTTPException(404, f"run {run_id} has no samples yet")
        return FileResponse(path, media_type="text/plain; charset=utf-8")
    try:  # the task checks what only it knows (a length within the run's sequences)
        texts = ctx.on_assembled_model(
            run,
            config.task,
            "sample_texts",
            num=num or 8,
            length=length,
            steps=steps,
            seed=config.sample.seed if seed is None else seed,
            weights=weights or config.sample.weights,
            **prompted,
        )
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    return Response("".join(t + "\n" for t in texts), media_type="text/plain; charset=utf-8")


@router.post(
    "/v1/runs/{run_id}/predict",
    dependencies=[Depends(authorised)],
    response_model=Predictions,
    responses=errors(400, 401, 404, 409, 413, 422, 429, 503),
)
def predict(ctx: Context, run_id: str, body: PredictRequest) -> dict:
    """Labels for images, from a finished classification run (same limits as sampling: at most 2 at once)."""
    import torch

    run = ctx.run_or_404(run_id)
    config = ctx.config_of(run)
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
        raise HTTPException(422, f"images: shape {list(images.shape)}, expected N x {' x '.join(map(str, expected))}")
    if not torch.isfinite(images).all():
        raise HTTPException(422, "images: NaN or infinite values")
    probs = ctx.on_assembled_model(
        run, config.task, "predict", images=images.clamp(-1, 1), weights="ema", seed=body.seed
    )
    return {"labels": probs.argmax(dim=1).tolist(), "probabilities": probs.max(dim=1).values.tolist()}


@router.get(
    "/v1/runs/{run_id}/previews",
    dependencies=[Depends(authorised)],
    response_model=list[str],
    responses=errors(401, 404),
)
def previews(ctx: Context, run_id: str) -> list[str]:
    run = ctx.run_or_404(run_id)
    checkpoints = run_storage(run)  # the workers write previews there while blocks train
    return [n for n in checkpoints.list_names(previews_dir(checkpoints)) if PREVIEW_NAME.fullmatch(n)]


@router.get(
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
def preview(ctx: Context, run_id: str, name: Annotated[str, FastAPIPath(pattern=PREVIEW_NAME.pattern, max_length=64)]):
    run = ctx.run_or_404(run_id)
    if not PREVIEW_NAME.fullmatch(name):  # a plain file name: nothing can escape the run directory
        raise HTTPException(422, "name must look like block_<i>_step_<s>.png (or .txt for text runs)")
    checkpoints = run_storage(run)
    try:
        data = checkpoints.read_bytes(f"{previews_dir(checkpoints)}/{name}")
    except FileNotFoundError:
        raise HTTPException(404, f"run {run_id} has no preview {name}") from None
    media = "image/png" if name.endswith(".png") else "text/plain; charset=utf-8"
    return Response(data, media_type=media)
