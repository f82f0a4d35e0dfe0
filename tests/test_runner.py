"""The run reconciler against a real Redis: what a worker writes on the shared storage cannot crash it."""

from pathlib import Path

from coordinator.reconcile import Resources
from coordinator.records import State
from coordinator.runner import RunReconciler
from coordinator.runs import create_run
from coordinator.store import Store
from shared.config import load_config
from shared.job import progress_path
from tests.conftest import REPO


class InFlight:
    """The dispatcher seam the reconciler uses: which blocks run now, and submitting one (recorded, not run)."""

    def __init__(self, indices: set[int]):
        self.indices = indices
        self.submitted: list[int] = []

    def in_flight(self, run_id: str) -> set[int]:
        return self.indices

    def submit(self, job, storage_uri, demand, previews=True, *, attempt=1) -> str:
        self.submitted.append(job.block.index)
        self.indices.add(job.block.index)
        return job.name

    def attach(self, job, demand, *, attempt) -> bool:
        return False


def test_progress_files_that_are_partial_or_garbage_are_skipped(redis_client, tmp_path):
    store = Store(redis_client, prefix="t-runner")
    config = load_config(REPO / "tests" / "tiny.yaml")
    create_run(config, store=store, run_id="r1", run_dir=tmp_path / "r1")
    store.transition_block("r1", 0, State.RUNNING, attempt=1)
    reconciler = RunReconciler("r1", store=store, dispatcher=InFlight({0}))
    path = Path(progress_path(reconciler.storage, reconciler.job(store.get_blocks("r1")[0])))
    path.parent.mkdir(parents=True)

    for text in ["{not json", "[1, 2]", '{"loss": 0.5}', '{"step": "many"}', '{"step": 3, "loss": "low"}']:
        path.write_text(text)
        reconciler.poll_progress()  # must not raise
        assert store.get_blocks("r1")[0].step == 0, text

    path.write_text('{"step": 4}')  # a report without a loss (e.g. a restart after the last step)
    reconciler.poll_progress()
    assert store.get_blocks("r1")[0].step == 4 and store.get_blocks("r1")[0].loss is None
    path.write_text('{"step": 5, "loss": 0.25, "node": "n1"}')
    reconciler.poll_progress()
    block = store.get_blocks("r1")[0]
    assert (block.step, block.loss, block.node, block.state) == (5, 0.25, "n1", State.RUNNING)


def test_a_block_bigger_than_the_cluster_waits_with_its_reason_until_the_cluster_grows(redis_client, tmp_path):
    store = Store(redis_client, prefix="t-runner-big")
    config = load_config(REPO / "tests" / "tiny.yaml", ["resources.per_block={0: {memory_gb: 64}}"])
    create_run(config, store=store, run_id="r1", run_dir=tmp_path / "r1")
    dispatcher = InFlight(set())
    reconciler = RunReconciler("r1", store=store, dispatcher=dispatcher, log=lambda _: None)
    assert [d.memory for d in reconciler.demands] == [64e9, 0.0]

    small = Resources(cpu=8, memory=32e9)
    left, launched = reconciler.launch_ready(small, small)
    assert dispatcher.submitted == [1] and launched == 1  # block 1 fits and starts; block 0 waits for a bigger one
    assert left == Resources(cpu=7, memory=32e9)
    waiting = store.get_blocks("r1")[0]
    assert waiting.state == State.PENDING and waiting.error.startswith("waiting: block 0 needs")
    assert "memory=64000000000" in waiting.error and reconciler.outcome() is None

    big = Resources(cpu=8, memory=128e9)  # a node with more memory joined
    reconciler.launch_ready(big, big)
    assert dispatcher.submitted == [1, 0]
    block = store.get_blocks("r1")[0]
    assert block.state == State.RUNNING and block.error == ""


class Cluster(InFlight):
    """The whole dispatcher seam of the coordinator loop: 8 CPUs, jobs recorded and never finishing."""

    def __init__(self):
        super().__init__(set())
        self.by_run: dict[str, set[int]] = {}

    def capacity(self):
        return Resources(8)

    def held(self):
        return Resources(sum(len(v) for v in self.by_run.values()))

    def in_flight(self, run_id):
        return self.by_run.setdefault(run_id, set())

    def num_in_flight(self):
        return sum(len(v) for v in self.by_run.values())

    def submit(self, job, storage_uri, demand, previews=True, *, attempt=1) -> str:
        self.in_flight(job.run_id).add(job.block.index)
        return job.name

    def attach(self, job, demand, *, attempt) -> bool:
        return False

    def wait(self, timeout_s):
        return []

    def cancel(self, run_id):
        self.by_run.pop(run_id, None)


def test_assembly_runs_beside_the_loop_and_a_new_coordinator_starts_it_again(redis_client, tmp_path, monkeypatch):
    """While one run assembles (held here on an event), ticks stay short and another run is admitted; a
    coordinator that dies mid-assembly leaves the run unfinished, and the next one assembles it."""
    import threading
    import time

    from coordinator.service import Coordinator

    store = Store(redis_client, prefix="t-assembly")
    config = load_config(REPO / "tests" / "tiny.yaml")
    create_run(config, store=store, run_id="done", run_dir=tmp_path / "done")
    for index in range(2):
        store.transition_block("done", index, State.RUNNING, attempt=1)
        store.transition_block("done", index, State.SUCCEEDED, step=config.train.steps_per_block)
    release, started = threading.Event(), []

    def slow_assembly(self):
        started.append(self.run_id)
        assert release.wait(30)
        self.store.set_run_state(self.run_id, State.SUCCEEDED, error="", assembly_s=1.0)
        return State.SUCCEEDED

    monkeypatch.setattr(RunReconciler, "_assemble_and_sample", slow_assembly)
    first = Coordinator(store=store, dispatcher=Cluster(), log=lambda _: None, poll_s=0)
    first.tick()
    assert [e["kind"] for e in store.events("done")][-1] == "assembly_started"
    create_run(config, store=store, run_id="next", run_dir=tmp_path / "next")
    began = time.monotonic()
    first.tick()
    assert time.monotonic() - began < 5  # the tick did not wait for the assembly
    assert store.get_run("done").state == State.PENDING and started == ["done"]  # not SUCCEEDED until assembled
    assert {b.state for b in store.get_blocks("next")} == {State.RUNNING}  # admitted meanwhile

    second = Coordinator(store=store, dispatcher=Cluster(), log=lambda _: None, poll_s=0)  # the first "died"
    second.tick()
    assert started == ["done", "done"]  # assembled again from the start
    release.set()
    deadline = time.monotonic() + 30
    while store.get_run("done").state != State.SUCCEEDED or "done" in second.reconcilers:
        assert time.monotonic() < deadline  # (the run is SUCCEEDED a moment before its assembly thread returns)
        second.tick()
    assert "done" not in second.reconcilers and "done" not in second.assembling


def test_a_block_is_submitted_only_after_its_running_record_is_written(redis_client, tmp_path):
    """The RUNNING write comes first: when Redis fails on it, nothing was submitted (no second launch later); when
    the submission fails, the block goes back to PENDING with its attempt uncharged; the next launch is the only one.
    """
    import pytest
    import redis as redis_lib

    class FlakyStore(Store):
        fail_next_transition = False

        def transition_block(self, *args, **kwargs):
            if self.fail_next_transition:
                self.fail_next_transition = False
                raise redis_lib.ConnectionError("injected: Redis went away")
            return super().transition_block(*args, **kwargs)

    class FlakyDispatcher(InFlight):
        fail_next_submit = False

        def submit(self, job, storage_uri, demand, previews=True, *, attempt=1) -> str:
            if self.fail_next_submit:
                self.fail_next_submit = False
                raise RuntimeError("injected: Ray refused the job")
            return super().submit(job, storage_uri, demand, previews, attempt=attempt)

    store = FlakyStore(redis_client, prefix="t-runner-order")
    create_run(load_config(REPO / "tests" / "tiny.yaml"), store=store, run_id="r1", run_dir=tmp_path / "r1")
    dispatcher = FlakyDispatcher(set())
    reconciler = RunReconciler("r1", store=store, dispatcher=dispatcher, log=lambda _: None)
    block = store.get_blocks("r1")[0]

    store.fail_next_transition = True
    with pytest.raises(redis_lib.ConnectionError):
        reconciler._launch(block)
    assert dispatcher.submitted == [] and store.get_blocks("r1")[0].state == State.PENDING

    dispatcher.fail_next_submit = True
    with pytest.raises(RuntimeError):
        reconciler._launch(block)
    assert dispatcher.submitted == []
    assert (store.get_blocks("r1")[0].state, store.get_blocks("r1")[0].attempt) == (State.PENDING, 0)

    reconciler._launch(store.get_blocks("r1")[0])
    assert dispatcher.submitted == [0]
    assert (store.get_blocks("r1")[0].state, store.get_blocks("r1")[0].attempt) == (State.RUNNING, 1)
