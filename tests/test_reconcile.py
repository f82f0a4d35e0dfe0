"""Pure coordinator decisions: admission by capacity, retry, run outcome."""

from coordinator.reconcile import Resources, after_failure, launches, run_outcome, too_big
from coordinator.records import BlockRecord, State


def blocks(*states, attempt=0):
    return [BlockRecord(index=i, state=s, attempt=attempt) for i, s in enumerate(states)]


def each(demand, n=3):
    return [demand] * n


def test_admits_only_what_the_free_resources_fit_in_index_order():
    three = blocks(State.PENDING, State.PENDING, State.PENDING)
    assert launches(three, set(), each(Resources(1)), Resources(2)) == [0, 1]
    assert launches(three, set(), each(Resources(1)), Resources(8)) == [0, 1, 2]
    assert launches(three, set(), each(Resources(0.5)), Resources(1.0)) == [0, 1]
    assert launches(three, set(), each(Resources(1, 1)), Resources(8, 1)) == [0]


def test_in_flight_jobs_count_against_capacity():
    mixed = blocks(State.RUNNING, State.PENDING, State.PENDING)
    assert launches(mixed, {0}, each(Resources(1)), Resources(2)) == [1]
    assert launches(mixed, {0}, each(Resources(2)), Resources(2)) == []


def test_the_service_cap_on_jobs_in_flight_limits_new_launches():
    three = blocks(State.PENDING, State.PENDING, State.PENDING)
    assert launches(three, set(), each(Resources(1)), Resources(8), max_new=2) == [0, 1]
    assert launches(three, set(), each(Resources(1)), Resources(8), max_new=0) == []
    assert launches(three, set(), each(Resources(1)), Resources(8), max_new=None) == [0, 1, 2]


def test_uneven_budgets_start_the_most_steps_left_first():
    """Longest first: budgets 2000/2000/4000 on room for two end in 4000 step-times, not 6000 (index order)."""
    three = [BlockRecord(index=i, total_steps=n) for i, n in enumerate((2000, 2000, 4000))]
    assert launches(three, set(), each(Resources(1)), Resources(2)) == [2, 0]
    three[2].step = 3000  # resumed from a checkpoint: 1000 left
    assert launches(three, set(), each(Resources(1)), Resources(2)) == [0, 1]
    assert makespan([2000, 2000, 4000], order=[2, 0, 1], slots=2) == 4000
    assert makespan([2000, 2000, 4000], order=[0, 1, 2], slots=2) == 6000


def makespan(steps: list[int], order: list[int], slots: int) -> int:
    """When the last of `steps` ends if each starts, in `order`, on the first of `slots` to come free."""
    free_at = [0] * slots
    for i in order:
        slot = free_at.index(min(free_at))
        free_at[slot] += steps[i]
    return max(free_at)


def test_orphaned_running_blocks_are_relaunched_first():
    mixed = blocks(State.PENDING, State.RUNNING, State.SUCCEEDED)
    assert launches(mixed, set(), each(Resources(1)), Resources(1)) == [1]


def test_a_block_bigger_than_the_whole_cluster_waits_without_holding_back_the_rest():
    three = blocks(State.PENDING, State.PENDING, State.PENDING)
    demands = [Resources(1, 1), Resources(1), Resources(1)]
    assert launches(three, set(), demands, Resources(4, 0)) == [1, 2]  # no GPU yet: block 0 waits for one
    assert too_big(demands, Resources(4, 0)) == {
        0: "block 0 needs Resources(cpu=1, gpu=1, memory=0.0), more than the "
        "whole cluster has now (Resources(cpu=4, gpu=0, memory=0.0))"
    }
    assert launches(three, set(), demands, Resources(4, 1)) == [0, 1, 2]  # a GPU node joined
    assert too_big(demands, Resources(4, 1)) == {}


def test_each_block_has_its_own_demand_including_memory():
    GB = 1e9
    three = blocks(State.PENDING, State.PENDING, State.PENDING)
    small, large = Resources(1, memory=2 * GB), Resources(1, memory=10 * GB)
    capacity = Resources(8, memory=12 * GB)
    assert launches(three, set(), [small, large, small], capacity) == [0, 1]
    # the large block in flight leaves room for one small one only
    assert launches(blocks(State.PENDING, State.RUNNING, State.PENDING), {1}, [small, large, small], capacity) == [0]
    # strictly in order: a large block that does not fit now is not overtaken by a small one behind it
    assert (
        launches(
            blocks(State.SUCCEEDED, State.PENDING, State.PENDING),
            set(),
            [small, large, small],
            capacity,
            available=Resources(8, memory=4 * GB),
        )
        == []
    )
    assert launches(three, set(), [small, Resources(1, memory=13 * GB), small], capacity) == [0, 2]


def test_gpu_blocks_wait_for_gpus_while_cpu_blocks_start():
    three = blocks(State.PENDING, State.PENDING, State.PENDING)
    demands = [Resources(1), Resources(1), Resources(1, 1)]
    assert launches(three, set(), demands, Resources(4, 1)) == [0, 1, 2]
    assert launches(three, set(), demands, Resources(4, 1), available=Resources(4, 0)) == [0, 1]


def test_retry_until_attempts_run_out():
    assert after_failure(BlockRecord(index=0, attempt=1), max_attempts=3) == State.PENDING
    assert after_failure(BlockRecord(index=0, attempt=3), max_attempts=3) == State.FAILED


def test_run_outcome():
    assert run_outcome(blocks(State.SUCCEEDED, State.SUCCEEDED)) == State.SUCCEEDED
    assert run_outcome(blocks(State.SUCCEEDED, State.RUNNING)) is None
    assert run_outcome(blocks(State.FAILED, State.RUNNING)) == State.FAILED
    assert run_outcome(blocks(State.CANCELLED, State.SUCCEEDED)) == State.CANCELLED


def test_an_idle_dispatcher_waits_its_poll_interval():
    """With no job in flight, wait() still takes its timeout: the loop's tick cadence (it used to return at once,
    and an idle leader spun through hundreds of ticks a second against Redis)."""
    import time

    from coordinator.dispatch import RayDispatcher

    dispatcher = RayDispatcher(address=None)  # not connected: nothing in flight, no Ray call made
    started = time.monotonic()
    assert dispatcher.wait(0.3) == []
    assert time.monotonic() - started >= 0.3
