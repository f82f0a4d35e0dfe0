"""Pure decisions of the coordinator: what to launch, retry, fail or assemble next.

A function of the block records, the in-flight set and the cluster's capacity; tested without Redis or Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.records import BlockRecord, State


@dataclass(frozen=True)
class Resources:
    """An amount of cluster resources (memory in bytes): what a block job holds while it runs (its demand), what
    the cluster has (capacity) or has free (available)."""

    cpu: float
    gpu: float = 0.0
    memory: float = 0.0

    def times(self, n: int) -> Resources:
        return Resources(self.cpu * n, self.gpu * n, self.memory * n)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.gpu + other.gpu, self.memory + other.memory)

    def fits(self, capacity: Resources) -> bool:
        return (
            self.cpu <= capacity.cpu + 1e-9
            and self.gpu <= capacity.gpu + 1e-9
            and self.memory <= capacity.memory + 1e-9
        )


NOTHING = Resources(0.0)


def too_big(demands: Sequence[Resources], capacity: Resources) -> dict[int, str]:
    """Blocks that need more than the whole cluster has right now, with the reason (they wait for it to grow)."""
    return {
        i: f"block {i} needs {d}, more than the whole cluster has now ({capacity})"
        for i, d in enumerate(demands)
        if not d.fits(capacity)
    }


def free(capacity: Resources, held: Resources) -> Resources:
    return Resources(
        max(0.0, capacity.cpu - held.cpu), max(0.0, capacity.gpu - held.gpu), max(0.0, capacity.memory - held.memory)
    )


def launches(
    blocks: list[BlockRecord],
    in_flight: set[int],
    demands: Sequence[Resources],
    capacity: Resources,
    available: Resources | None = None,
    max_new: int | None = None,
) -> list[int]:
    """Blocks to start now, in order, while they fit in `available` (default: capacity minus this run's
    in-flight blocks); `demands[i]` is block i's. In order means a block waiting for room is not overtaken by
    the blocks behind it, so large blocks do not starve. A block bigger than the whole cluster (`capacity`) is
    passed over instead: nothing could start it until the cluster grows (an autoscaler, a node joining).

    Candidates are RUNNING blocks that nobody is running (orphans of a dead coordinator, re-submitted under
    their old Ray name so they resume from their last checkpoint), then PENDING blocks, the most steps left first
    (then by index): when blocks have different budgets (`train.block_step_scale`) and not all fit at once, the
    longest starting first finishes the run soonest (longest-processing-time-first list scheduling). At most
    `max_new` are chosen (the service's cap on block jobs in flight).
    """
    big = too_big(demands, capacity)
    if available is None:
        available = free(capacity, sum((demands[i] for i in in_flight), NOTHING))
    chosen: list[int] = []
    taken = NOTHING
    for block in sorted(blocks, key=lambda b: (b.state != State.RUNNING, b.step - b.total_steps, b.index)):
        wanted = block.state == State.PENDING or (block.state == State.RUNNING and block.index not in in_flight)
        if not wanted or block.index in big:
            continue
        if not (taken + demands[block.index]).fits(available) or len(chosen) == max_new:
            break
        taken = taken + demands[block.index]
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
