"""One run's reconcile step: read its records -> decide (coordinator.reconcile, pure) -> act.

`RunReconciler` has no loop of its own: the `Coordinator` (coordinator/service.py) calls it for every active run.
Redis is touched only through `Store`, Ray only through the dispatcher (coordinator/jobs.py). A block found RUNNING
in Redis but not in flight here (a previous coordinator died or stepped down) is attached to: its detached job is
still training, and this coordinator waits on it instead. Only if its job is gone too is it re-submitted under its
Ray name, resuming from its checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml

from coordinator.artefacts.assemble import assemble, collect_block, collect_previews
from coordinator.artefacts.finish import artefacts_from_files
from coordinator.jobs import Dispatcher, JobResult
from coordinator.metrics import Metrics
from coordinator.model_work import ModelWork, WorkerLost, shared_model_work
from coordinator.reconcile import NOTHING, Resources, after_failure, free, launches, run_outcome, too_big
from coordinator.records import BlockRecord, State
from coordinator.runs import block_demand, run_storage
from coordinator.store import Store
from shared.checkpoint import CheckpointError
from shared.config import parse_config
from shared.job import BlockJob, progress_path
from shared.plan import block_specs, boundaries

Log = Callable[[str], None]


class RunReconciler:
    """Reconciles one run. Holds only in-process handles; all state is in Redis."""

    def __init__(
        self,
        run_id: str,
        *,
        store: Store,
        dispatcher: Dispatcher,
        log: Log = print,
        metrics: Metrics | None = None,
        model_work: ModelWork | None = None,
    ):
        run = store.get_run(run_id)
        if run is None:
            raise KeyError(f"no run {run_id!r} in the store")
        self.run_id, self.store, self.dispatcher, self.log = run_id, store, dispatcher, log
        self.run_dir = Path(run.run_dir)
        self.storage = run_storage(run)
        self.config_yaml = run.config_yaml
        self.config = parse_config(yaml.safe_load(run.config_yaml), stored=True)
        self.model_work = model_work or shared_model_work()  # where the finished run's artefacts are made
        self.specs = block_specs(self.config)
        self.num_blocks = len(self.specs)
        self._blocks: list[BlockRecord] | None = None  # read once per tick (see blocks())
        self._status: tuple[State, bool] | None = None  # likewise: (state, cancel requested)
        self.demands = [block_demand(self.config, spec.index) for spec in self.specs]
        self.metrics = metrics or Metrics()

    def blocks(self) -> list[BlockRecord]:
        """The run's block records, read at most once between changes: the coordinator calls `refresh` at each
        tick's start, and every write of ours drops the copy (only the leader writes block records)."""
        if self._blocks is None:
            self._blocks = self.store.get_blocks(self.run_id, self.num_blocks)
        return self._blocks

    def status(self) -> tuple[State, bool]:
        """The run's state and whether a cancel was requested, read at most once between changes (as `blocks`)."""
        if self._status is None:
            self._status = self.store.run_status(self.run_id)
        return self._status

    def refresh(self) -> None:
        self._blocks = self._status = None

    def prime(self, status: tuple[State, bool] | None, blocks: list[BlockRecord]) -> None:
        """This tick's reads, made for every run at once (`Store.run_snapshots`); a run gone meanwhile (no status)
        is read again on its own, and fails as before."""
        self._status, self._blocks = status, (blocks if status is not None else None)

    def job(self, block: BlockRecord) -> BlockJob:
        return BlockJob(
            run_id=self.run_id,
            config=self.config,
            block=self.specs[block.index],
            total_steps=block.total_steps or None,
            generation=block.generation,
        )

    def launch_ready(
        self, capacity: Resources, available: Resources, max_new: int | None = None
    ) -> tuple[Resources, int]:
        """Launch what fits in `available` (at most `max_new`); return what is still available, and how many
        were launched."""
        if self.status()[0] == State.PENDING:
            self._status = None
            self.store.set_run_state(self.run_id, State.RUNNING)
        blocks = self.blocks()
        for index, reason in too_big(self.demands, capacity).items():  # say why it waits, once
            if blocks[index].state == State.PENDING and blocks[index].error != f"waiting: {reason}":
                self.refresh()
                self.store.update_progress(self.run_id, index, error=f"waiting: {reason}")
                self.log(f"waiting: {reason}")
        chosen = launches(blocks, self.dispatcher.in_flight(self.run_id), self.demands, capacity, available, max_new)
        for index in chosen:
            self._launch(blocks[index])
        return free(available, sum((self.demands[i] for i in chosen), NOTHING)), len(chosen)

    def _launch(self, block: BlockRecord) -> None:
        """Record RUNNING first, then submit: if Redis fails in between, nothing was submitted, and the next tick
        finds a RUNNING block with no job in flight and launches it once (as an orphan, under the same Ray name).
        The other order could submit a block twice (submitted, RUNNING write lost, still PENDING).

        An orphan whose detached job still runs is attached to, not launched: its training goes on untouched."""
        job = self.job(block)
        demand = self.demands[block.index]
        if block.state == State.RUNNING and self.dispatcher.attach(job, demand, attempt=block.attempt):
            self.store.record_event(self.run_id, "block_attached", block=block.index, attempt=block.attempt)
            self.log(f"block {block.index}: attached to its running job (attempt {block.attempt})")
            return
        attempt = block.attempt + 1 if block.state == State.PENDING else block.attempt
        now = time.time()
        self.refresh()
        self.store.transition_block(
            self.run_id, block.index, State.RUNNING, attempt=attempt, ray_name=job.name, error="", launched_at=now
        )
        try:
            name = self.dispatcher.submit(job, self.storage.uri, self.demands[block.index], attempt=attempt)
        except Exception:
            if block.state == State.PENDING:  # not launched: back to the queue, the attempt not charged
                self.refresh()
                self.store.transition_block(self.run_id, block.index, State.PENDING, attempt=block.attempt)
            raise
        self.metrics.launches.inc()
        if block.state == State.PENDING:
            self.metrics.queue_wait.observe(max(0.0, now - block.updated_at))
        self.log(f"block {block.index}: launched {name} (attempt {attempt})")

    def on_result(self, result: JobResult) -> None:
        index = result.block_index
        block = self.blocks()[index]
        if block.state != State.RUNNING:  # cancelled meanwhile
            return
        duration = max(0.0, time.time() - block.launched_at)
        # Only running blocks have a series.
        for gauge in (self.metrics.block_step, self.metrics.block_loss, self.metrics.block_accuracy):
            try:
                gauge.remove(str(index))
            except KeyError:
                pass
        if result.ok:
            try:
                file, digest = collect_block(
                    self.storage, result.checkpoint_path, self.run_dir, self.specs[index], self.config.hash()
                )
            except (CheckpointError, OSError) as err:
                result = replace(result, ok=False, checkpoint_path=None, error=f"collect failed: {err}")
            else:
                m = result.metrics
                self.refresh()
                self.store.transition_block(
                    self.run_id,
                    index,
                    State.SUCCEEDED,
                    checkpoint=result.checkpoint_path,
                    weights_file=file,
                    sha256=digest,
                    step=int(m.get("step", block.step)),
                    loss=m.get("loss"),
                    accuracy=m.get("accuracy"),
                    node=result.node,
                    finished_at=time.time(),
                    train_s=m.get("train_s", 0.0),
                    first_step_at=m.get("first_step_at") or 0.0,
                    loop_started_at=m.get("started_at") or 0.0,
                    entered_at=m.get("entered_at") or 0.0,
                    resumed_from_step=m.get("resumed_from_step", block.resumed_from_step),
                )
                self.metrics.job_duration.labels("succeeded").observe(duration)
                loss = m.get("loss")
                self.log(
                    f"block {index}: SUCCEEDED at step {m.get('step')}"
                    + (f" loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
                )
                return
        state = after_failure(block, self.config.train.max_attempts)
        self.refresh()
        self.store.transition_block(self.run_id, index, state, error=result.error or "unknown error")
        self.metrics.job_duration.labels("failed").observe(duration)
        self.metrics.failures.inc()
        if state == State.PENDING:
            self.metrics.retries.inc()
        self.log(f"block {index}: attempt {block.attempt} failed ({result.error}); now {state}")

    def poll_progress(self) -> None:
        """Read each in-flight block's progress file; record them all in one write."""
        in_flight = self.dispatcher.in_flight(self.run_id)
        if not in_flight:
            return
        blocks = self.blocks()
        updates: dict[int, dict] = {}
        for index in in_flight:
            try:
                metrics = json.loads(self.storage.read_text(progress_path(self.storage, self.job(blocks[index]))))
                step, loss = int(metrics["step"]), metrics.get("loss")
                loss = None if loss is None else float(loss)
            except (OSError, ValueError, TypeError, KeyError):  # not there yet, or not ours to trust: skip
                continue
            self.metrics.block_step.labels(str(index)).set(step)
            if loss is not None:
                self.metrics.block_loss.labels(str(index)).set(loss)
            accuracy = metrics.get("accuracy")
            accuracy = float(accuracy) if isinstance(accuracy, (int, float)) else None
            if accuracy is not None:
                self.metrics.block_accuracy.labels(str(index)).set(accuracy)
            updates[index] = dict(
                step=step,
                loss=loss,
                accuracy=accuracy,
                resumed_from_step=metrics.get("resumed_from_step", 0),
                first_step_at=metrics.get("first_step_at") or 0.0,
                loop_started_at=metrics.get("started_at") or 0.0,
                entered_at=metrics.get("entered_at") or 0.0,
                node=metrics.get("node", ""),
            )
        if updates:
            self._blocks = None  # (if the write fails, read afresh)
            self.store.update_progress_many(self.run_id, updates)
            # what was written, kept, and the run's status too: the rest of the tick needs no second read (only the
            # leader writes these; a progress write changes no state)
            self._blocks = [replace(b, **updates[b.index]) if b.index in updates else b for b in blocks]

    def progress_line(self) -> str:
        parts = []
        for b in self.blocks():
            loss = f" loss {b.loss:.3f}" if b.loss is not None else ""
            loss += f" acc {b.accuracy:.3f}" if b.accuracy is not None else ""
            parts.append(f"[{b.index}] {b.state} {b.step}/{b.total_steps}{loss}")
        return "  ".join(parts)

    def outcome(self) -> State | None:
        """Terminal state the run should reach now, if any (a cancel request counts)."""
        if self.status()[1]:
            return State.CANCELLED
        return run_outcome(self.blocks())

    def finish(self, final_state: State) -> State:
        self.refresh()  # it changes many records, and may run in the assembly thread: read afresh throughout
        if final_state == State.SUCCEEDED:
            try:
                return self._assemble_and_sample()
            except (CheckpointError, OSError, WorkerLost) as err:
                final_state, error = State.FAILED, f"assembly failed: {err}"
        else:
            error = "; ".join(f"block {b.index}: {b.error}" for b in self.blocks() if b.error)
        in_flight = self.dispatcher.in_flight(self.run_id)
        for b in self.blocks():  # jobs a previous coordinator left running
            if b.state == State.RUNNING and b.index not in in_flight:
                self.dispatcher.stop(self.job(b), attempt=b.attempt)
        self.dispatcher.cancel(self.run_id)
        for b in self.blocks():
            if b.state in (State.PENDING, State.RUNNING):
                self.store.transition_block(self.run_id, b.index, State.CANCELLED)
        self.refresh()
        self.store.set_run_state(
            self.run_id, final_state, error=error or ("cancelled" if final_state == State.CANCELLED else "")
        )
        self.log(f"run {self.run_id} {final_state}: {error}")
        return final_state

    def _assemble_and_sample(self) -> State:
        started = time.perf_counter()
        manifest = assemble(self.config, self.specs, boundaries(self.config), self.blocks(), self.run_dir)
        collect_previews(self.storage, self.run_dir)
        summary = self.model_work.run(  # the model loaded, verified and sampled in a worker process
            self.config.task, artefacts_from_files, str(self.run_dir), self.config_yaml, manifest,
            self.storage.uri, self.run_id, self.blocks(),
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        self.metrics.assembly.observe(elapsed)
        self.store.set_run_state(self.run_id, State.SUCCEEDED, error="", assembly_s=elapsed)
        self.log(f"run {self.run_id} SUCCEEDED: {len(manifest['blocks'])} blocks assembled, {summary}")
        return State.SUCCEEDED
