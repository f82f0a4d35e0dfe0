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

    def submit(self, job, storage_uri, demand) -> str:
        self.submitted.append(job.block.index)
        self.indices.add(job.block.index)
        return job.name


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
