"""Pure decisions of the coordinator: what to launch, retry, fail or assemble next.

A function of the block records, the in-flight set and the cluster's capacity; tested without Redis or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.store import BlockRecord, State


@dataclass(frozen=True)
class Demand:
    """Resources one block job holds while it runs."""

    cpu: float
    gpu: float = 0.0

    def times(self, n: int) -> "Demand":
        return Demand(self.cpu * n, self.gpu * n)

    def fits(self, capacity: "Demand") -> bool:
        return self.cpu <= capacity.cpu + 1e-9 and self.gpu <= capacity.gpu + 1e-9


def free(capacity: Demand, held: Demand) -> Demand:
    return Demand(max(0.0, capacity.cpu - held.cpu), max(0.0, capacity.gpu - held.gpu))


def launches(blocks: list[BlockRecord], in_flight: set[int], demand: Demand, capacity: Demand,
             available: Demand | None = None) -> list[int]:
    """Blocks to start now, in index order, that fit in `available` (default: capacity minus this run's
    in-flight blocks). `capacity` is the whole cluster: a block that can never fit is an error.

    Candidates are PENDING blocks and RUNNING blocks that nobody is running (orphans of a dead coordinator,
    re-submitted under their old Ray name so they resume from their last checkpoint).
    """
    if not demand.fits(capacity):
        raise ValueError(f"one block needs {demand}, more than the whole cluster has ({capacity})")
    if available is None:
        available = free(capacity, demand.times(len(in_flight)))
    chosen: list[int] = []
    for block in sorted(blocks, key=lambda b: (b.state != State.RUNNING, b.index)):
        wanted = block.state == State.PENDING or (block.state == State.RUNNING and block.index not in in_flight)
        if wanted and demand.times(len(chosen) + 1).fits(available):
            chosen.append(block.index)
    return chosen


def after_failure(block: BlockRecord, max_attempts: int) -> State:
    """A failed attempt goes back to PENDING (it resumes from its checkpoint) until attempts run out."""
    return State.PENDING if block.attempt < max_attempts else State.FAILED


def run_outcome(blocks: list[BlockRecord]) -> State | None:
    """SUCCEEDED when every block has (time to assemble), FAILED/CANCELLED when any did, else None (running)."""
    states = {b.state for b in blocks}
    if State.FAILED in states:
        return State.FAILED
    if State.CANCELLED in states:
        return State.CANCELLED
    if states == {State.SUCCEEDED}:
        return State.SUCCEEDED
    return None
