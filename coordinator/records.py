"""The records of runs and block jobs, their states and the allowed transitions: plain data, no Redis.

`coordinator.store` persists them; the pure decisions (`coordinator.reconcile`) and the run artefacts read them
without importing Redis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class State(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})

# Allowed transitions of a block job. A RUNNING block may go back to PENDING to be retried.
BLOCK_TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset({State.PENDING, State.RUNNING, State.SUCCEEDED, State.FAILED, State.CANCELLED}),
    State.SUCCEEDED: frozenset({State.PENDING}),  # retrain one block
    State.FAILED: frozenset({State.PENDING}),
    State.CANCELLED: frozenset({State.PENDING}),
}


@dataclass(kw_only=True)
class BlockRecord:
    index: int
    state: State = State.PENDING
    attempt: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    accuracy: float | None = None  # tasks with a progress metric (classification): the block's training accuracy
    resumed_from_step: int = 0
    sigma_lo: float = 0.0
    sigma_hi: float = 0.0
    ray_name: str = ""
    checkpoint: str = ""
    weights_file: str = ""
    sha256: str = ""
    node: str = ""
    error: str = ""
    generation: int = 0  # bumped by a from-scratch retrain: a fresh Ray run name
    launched_at: float = 0.0  # wall clock when this attempt was submitted
    entered_at: float = 0.0  # wall clock when the worker entered its entry point (from the worker)
    first_step_at: float = 0.0  # wall clock of this block's first training step (from the worker)
    loop_started_at: float = 0.0  # wall clock when the worker's training loop began, before that step (from the worker)
    train_s: float = 0.0  # seconds the worker spent in its training loop (last attempt)
    finished_at: float = 0.0
    updated_at: float = 0.0


@dataclass(kw_only=True)
class RunRecord:
    id: str
    state: State = State.PENDING
    num_blocks: int = 0
    config_yaml: str = ""
    config_hash: str = ""
    run_dir: str = ""
    checkpoint_uri: str = ""  # where the blocks' Ray runs, checkpoints, progress and previews live (path or s3://)
    error: str = ""
    cancel_requested: bool = False
    assembly_s: float = 0.0  # seconds spent assembling, sampling and drawing the pictures
    created_at: float = 0.0
    updated_at: float = 0.0


def block_view(block: BlockRecord) -> dict:
    """A block record as JSON (the API's and the CLI's view)."""
    return {**asdict(block), "state": str(block.state)}


def run_view(run: RunRecord, blocks: list[BlockRecord]) -> dict:
    """A run and its blocks as JSON (`GET /v1/runs/{id}`, `dblocks status --json`)."""
    return {
        "id": run.id,
        "state": str(run.state),
        "error": run.error,
        "run_dir": run.run_dir,
        "config_hash": run.config_hash,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "cancel_requested": run.cancel_requested,
        "assembly_s": run.assembly_s,
        "blocks": [block_view(b) for b in blocks],
    }
