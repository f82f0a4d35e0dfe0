"""The HTTP API's typed bodies: what every route returns, the one error shape of every 4xx, and the OpenAPI
document built from them (the run config's own JSON Schema is the body of `POST /v1/runs`). docs/api.md."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from coordinator.records import BlockRecord


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(
        description="Where: ['body', 'train', 'lr'], ['query', 'steps'], or [] for the request."
    )
    msg: str = Field(description="What is wrong, for a person.")
    type: str = Field(description="A stable kind: not_found, conflict, invalid_config, invalid_data, ...")


class ErrorResponse(BaseModel):
    """Every 4xx (FastAPI's own validation included) answers this shape."""

    detail: list[ErrorItem]


ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    421: "misdirected_request",
    422: "invalid_request",
    429: "too_many_requests",
    503: "worker_lost",
}

ERROR_DESCRIPTIONS = {
    400: "The body is not parseable JSON (not UTF-8, or not JSON at all).",
    401: "Missing or wrong bearer token (when the service has one).",
    404: "No such run (or block, or preview).",
    409: "The run is in a state that does not allow this.",
    413: "Request body over 1 MiB.",
    421: "Without a token, the Host header names neither this service nor loopback (DBLOCKS_ALLOWED_HOSTS).",
    422: "The request names a bad field (path, message, type in `detail`).",
    429: "Too many sampling, prediction or data-reading requests at once; retry after `Retry-After` seconds.",
    503: "The worker process drawing from the model died (killed, out of memory); retry after `Retry-After` seconds.",
}


def errors(*statuses: int) -> dict:
    """`responses=` for a route: the statuses it can return, each with the error shape."""
    return {s: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreated(_Out):
    id: str


class RunSummary(_Out):
    id: str
    state: str
    num_blocks: int
    created_at: float


class RunView(_Out):
    id: str
    state: str
    error: str
    run_dir: str
    config_hash: str
    created_at: float
    updated_at: float
    cancel_requested: bool
    assembly_s: float
    blocks: list[BlockRecord]


class CancelAccepted(_Out):
    id: str
    cancel_requested: bool


class RunDeleted(_Out):
    id: str
    deleted: bool
    files_deleted: bool


class RetrainAccepted(_Out):
    id: str
    block: BlockRecord


class Predictions(_Out):
    labels: list[int]
    probabilities: list[float]


class Health(_Out):
    ok: bool


PNG = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}, "description": "PNG"}}
TEXT = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "One sample per line"}}


def config_body_schema(openapi: dict) -> dict:
    """The OpenAPI document with the run config's JSON Schema (every field, bound, enum, default, description;
    `additionalProperties: false`) as the body of `POST /v1/runs`: one of each registered task's run config (the
    shared sections and the task's own), picked by `task` (absent: the default task), sections as components."""
    from shared.config import DEFAULT_TASK, config_class
    from shared.tasks import TASKS

    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    variants = []
    for name in sorted(TASKS):
        cls = config_class(name)
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        schema["properties"]["task"] = {**schema["properties"]["task"], "enum": [name], "default": name}
        if name != DEFAULT_TASK:
            schema["required"] = ["task"]
        components[cls.__name__] = schema
        variants.append({"$ref": f"#/components/schemas/{cls.__name__}"})
    openapi["paths"]["/v1/runs"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": variants}}},
    }
    return openapi
