"""The dispatcher seam: what the coordinator asks of whatever runs block jobs.

`RayDispatcher` (coordinator/dispatch.py) is the real one; `dblocks bench coordinator` drives the real loop with a
simulated cluster behind the same interface (benchmarks/coordinator.py). Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from coordinator.reconcile import Resources
from shared.job import BlockJob


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """How one block job in flight ended."""

    run_id: str
    block_index: int
    ok: bool
    checkpoint_path: str | None
    metrics: dict
    error: str | None
    node: str


class Dispatcher(Protocol):
    def capacity(self) -> Resources:
        """The cluster's resources now."""

    def held(self) -> Resources:
        """What this dispatcher's jobs in flight hold, over every run."""

    def in_flight(self, run_id: str) -> set[int]:
        """The blocks of `run_id` whose jobs this dispatcher tracks."""

    def num_in_flight(self) -> int: ...

    def submit(
        self, job: BlockJob, storage_uri: str, demand: Resources, previews: bool = True, *, attempt: int = 1
    ) -> str:
        """Start `attempt` of a block; returns the job's name."""

    def attach(self, job: BlockJob, demand: Resources, *, attempt: int) -> bool:
        """Track `attempt` of a block if its job still runs (launched by an earlier coordinator)."""

    def wait(self, timeout_s: float) -> list[JobResult]:
        """The jobs that ended within `timeout_s` (waits `timeout_s` when none is in flight)."""

    def cancel(self, run_id: str) -> None:
        """Stop every tracked job of `run_id`."""

    def stop(self, job: BlockJob, *, attempt: int) -> None:
        """Stop `attempt` of a block's job, tracked or not."""

    def forget(self) -> None:
        """Stop tracking every job without stopping any."""

    def ready(self) -> bool: ...

    def shutdown(self) -> None: ...
