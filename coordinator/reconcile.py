"""Pure decisions of the coordinator: what to launch, retry, fail or assemble next.

A function of the block records, the in-flight set and the cluster's capacity; tested without Redis or Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.store import BlockRecord, State


@dataclass(frozen=True)
class Demand:
    """Resources one block job holds while it runs (memory in bytes; 0 = not reserved)."""

    cpu: float
    gpu: float = 0.0
    memory: float = 0.0

    def times(self, n: int) -> "Demand":
        return Demand(self.cpu * n, self.gpu * n, self.memory * n)

    def __add__(self, other: "Demand") -> "Demand":
        return Demand(self.cpu + other.cpu, self.gpu + other.gpu, self.memory + other.memory)

    def fits(self, capacity: "Demand") -> bool:
        return (self.cpu <= capacity.cpu + 1e-9 and self.gpu <= capacity.gpu + 1e-9
                and self.memory <= capacity.memory + 1e-9)


NOTHING = Demand(0.0)


class Unschedulable(ValueError):
    """A block needs more than the whole cluster has: waiting would never end."""

    def __init__(self, index: int, demand: Demand, capacity: Demand):
        super().__init__(f"block {index} needs {demand}, more than the whole cluster has ({capacity})")
        self.index = index


def free(capacity: Demand, held: Demand) -> Demand:
    return Demand(max(0.0, capacity.cpu - held.cpu), max(0.0, capacity.gpu - held.gpu),
                  max(0.0, capacity.memory - held.memory))


def launches(blocks: list[BlockRecord], in_flight: set[int], demands: Sequence[Demand], capacity: Demand,
             available: Demand | None = None) -> list[int]:
    """Blocks to start now, strictly in order, while they fit in `available` (default: capacity minus this
    run's in-flight blocks); `demands[i]` is block i's. `capacity` is the whole cluster: a block that can never
    fit is an error. In order means a large block waiting for room is not overtaken by smaller ones behind it.

    Candidates are RUNNING blocks that nobody is running (orphans of a dead coordinator, re-submitted under
    their old Ray name so they resume from their last checkpoint), then PENDING blocks by index.
    """
    for index, demand in enumerate(demands):
        if not demand.fits(capacity):
            raise Unschedulable(index, demand, capacity)
    if available is None:
        available = free(capacity, sum((demands[i] for i in in_flight), NOTHING))
    chosen: list[int] = []
    taken = NOTHING
    for block in sorted(blocks, key=lambda b: (b.state != State.RUNNING, b.index)):
        wanted = block.state == State.PENDING or (block.state == State.RUNNING and block.index not in in_flight)
        if not wanted:
            continue
        if not (taken + demands[block.index]).fits(available):
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
