"""Pure coordinator decisions: admission by capacity, retry, run outcome."""

import pytest

from coordinator.reconcile import Demand, after_failure, launches, run_outcome
from coordinator.store import BlockRecord, State


def blocks(*states, attempt=0):
    return [BlockRecord(index=i, state=s, attempt=attempt) for i, s in enumerate(states)]


def test_admits_only_what_the_free_resources_fit_in_index_order():
    three = blocks(State.PENDING, State.PENDING, State.PENDING)
    assert launches(three, set(), Demand(1), Demand(2)) == [0, 1]
    assert launches(three, set(), Demand(1), Demand(8)) == [0, 1, 2]
    assert launches(three, set(), Demand(0.5), Demand(1.0)) == [0, 1]
    assert launches(three, set(), Demand(1, 1), Demand(8, 1)) == [0]


def test_in_flight_jobs_count_against_capacity():
    mixed = blocks(State.RUNNING, State.PENDING, State.PENDING)
    assert launches(mixed, {0}, Demand(1), Demand(2)) == [1]
    assert launches(mixed, {0}, Demand(2), Demand(2)) == []


def test_orphaned_running_blocks_are_relaunched_first():
    mixed = blocks(State.PENDING, State.RUNNING, State.SUCCEEDED)
    assert launches(mixed, set(), Demand(1), Demand(1)) == [1]


def test_a_block_bigger_than_the_cluster_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="more than the whole cluster"):
        launches(blocks(State.PENDING), set(), Demand(1, 1), Demand(4, 0))


def test_retry_until_attempts_run_out():
    assert after_failure(BlockRecord(index=0, attempt=1), max_attempts=3) == State.PENDING
    assert after_failure(BlockRecord(index=0, attempt=3), max_attempts=3) == State.FAILED


def test_run_outcome():
    assert run_outcome(blocks(State.SUCCEEDED, State.SUCCEEDED)) == State.SUCCEEDED
    assert run_outcome(blocks(State.SUCCEEDED, State.RUNNING)) is None
    assert run_outcome(blocks(State.FAILED, State.RUNNING)) == State.FAILED
    assert run_outcome(blocks(State.CANCELLED, State.SUCCEEDED)) == State.CANCELLED
