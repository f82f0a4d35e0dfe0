"""The Redis store against a real redis-server: records, atomic transitions, events, key prefix."""

import threading

import pytest

from coordinator.records import BlockRecord, RunRecord, State
from coordinator.store import Store, TransitionError


def make_run(store, run_id="r1", num_blocks=3):
    store.create_run(
        RunRecord(id=run_id, config_yaml="name: x\n", config_hash="h", run_dir="/tmp/x"),
        [BlockRecord(index=i, sigma_lo=i, sigma_hi=i + 1, total_steps=10) for i in range(num_blocks)],
    )


def test_create_and_read_back(redis_client):
    store = Store(redis_client, prefix="t-store")
    make_run(store)
    run = store.get_run("r1")
    assert run.state == State.PENDING and run.num_blocks == 3 and run.config_hash == "h"
    blocks = store.get_blocks("r1")
    assert [b.index for b in blocks] == [0, 1, 2] and all(b.state == State.PENDING for b in blocks)
    assert store.list_runs() == ["r1"]
    assert all(k.startswith(b"t-store:") for k in redis_client.keys("t-store*"))
    with pytest.raises(TransitionError, match="already exists"):
        make_run(store)


def test_transitions_are_checked_and_logged(redis_client):
    store = Store(redis_client, prefix="t-trans")
    make_run(store)
    b = store.transition_block("r1", 1, State.RUNNING, attempt=1, ray_name="r1-block1")
    assert b.state == State.RUNNING and b.attempt == 1 and b.ray_name == "r1-block1"
    store.transition_block("r1", 1, State.SUCCEEDED, sha256="abc", step=10)
    with pytest.raises(TransitionError):
        store.transition_block("r1", 1, State.RUNNING)  # SUCCEEDED -> RUNNING skips PENDING
    with pytest.raises(TransitionError):
        store.transition_block("r1", 0, State.SUCCEEDED)  # PENDING -> SUCCEEDED never ran
    assert store.get_blocks("r1")[1].sha256 == "abc"
    kinds = [(e["kind"], e.get("state")) for e in store.events("r1")]
    assert kinds == [("run_created", None), ("block_state", "RUNNING"), ("block_state", "SUCCEEDED")]


def test_progress_updates_do_not_change_state(redis_client):
    store = Store(redis_client, prefix="t-prog")
    make_run(store, num_blocks=1)
    store.transition_block("r1", 0, State.RUNNING, attempt=1)
    store.update_progress("r1", 0, step=7, loss=0.5)
    b = store.get_blocks("r1")[0]
    assert (b.state, b.step, b.loss) == (State.RUNNING, 7, 0.5)


def test_concurrent_transitions_are_serialised(redis_client):
    """Two writers race PENDING -> RUNNING -> PENDING ...; every transition stays legal and none is lost."""
    store = Store(redis_client, prefix="t-race")
    make_run(store, num_blocks=1)
    errors = []

    def flip(n):
        for _ in range(n):
            try:
                current = store.get_blocks("r1")[0].state
                store.transition_block("r1", 0, State.RUNNING if current == State.PENDING else State.PENDING)
            except TransitionError as err:  # lost the race between read and write: must be refused cleanly
                errors.append(err)

    threads = [threading.Thread(target=flip, args=(50,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    states = [e["state"] for e in store.events("r1") if e["kind"] == "block_state"]
    assert len(states) + len(errors) == 100  # every attempt either committed with its event or was refused
    assert all(not (a == b == "PENDING") for a, b in zip(states, states[1:]))  # never an illegal PENDING->PENDING
    assert store.get_blocks("r1")[0].state == State(states[-1])
