"""The coordinator's loop for one run: plan -> records in Redis -> admit and dispatch -> collect -> assemble.

Every decision comes from `coordinator.reconcile` (pure); Redis is touched only through `Store`, Ray only
through `RayDispatcher`. A run whose blocks are RUNNING in Redis but not in flight here (a previous
coordinator died) is picked up where it stands: those blocks are re-submitted under their Ray names and
resume from their last checkpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from shared.checkpoint import CheckpointError, atomic_write_text
from shared.config import Config, parse_config
from workers.job import BlockJob, progress_path

import yaml

from coordinator.assemble import assemble, collect_block, write_samples_png
from coordinator.dispatch import Outcome, RayDispatcher
from coordinator.plan import block_specs, boundaries
from coordinator.reconcile import Demand, after_failure, launches, run_outcome
from coordinator.store import BlockRecord, RunRecord, State, Store

Log = Callable[[str], None]


def new_run_id(config: Config) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{config.name}-{stamp}-{config.hash()[:6]}"


def block_demand(config: Config) -> Demand:
    r = config.resources
    return Demand(cpu=r.cpus_per_block * r.num_workers_per_block, gpu=r.gpus_per_block * r.num_workers_per_block)


def create_run(config: Config, *, store: Store, run_id: str, run_dir: Path) -> None:
    """Write the resolved config and the run + PENDING block records (one transaction)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    records = [BlockRecord(index=s.index, sigma_lo=s.sigma_lo, sigma_hi=s.sigma_hi,
                           total_steps=config.train.steps_per_block) for s in block_specs(config)]
    store.create_run(RunRecord(id=run_id, config_yaml=config.to_yaml(), config_hash=config.hash(),
                               run_dir=str(run_dir)), records)


def checkpoint_root(run_dir: Path) -> str:
    return str((run_dir / "checkpoints").absolute())


class RunDriver:
    """Drives one run to a terminal state. Holds only in-process handles; all state is in Redis."""

    def __init__(self, run_id: str, *, store: Store, dispatcher: RayDispatcher, log: Log = print,
                 poll_s: float = 1.0, max_in_flight: int | None = None):
        run = store.get_run(run_id)
        if run is None:
            raise KeyError(f"no run {run_id!r} in the store")
        self.run_id, self.store, self.dispatcher, self.log, self.poll_s = run_id, store, dispatcher, log, poll_s
        self.run_dir = Path(run.run_dir)
        self.config = parse_config(yaml.safe_load(run.config_yaml))
        self.specs = block_specs(self.config)
        self.demand = block_demand(self.config)
        self.max_in_flight = max_in_flight  # optional per-run concurrency limit on top of cluster capacity

    def drive(self) -> State:
        self.store.set_run_state(self.run_id, State.RUNNING)
        try:
            outcome = self._until_blocks_finish()
        except KeyboardInterrupt:
            self.dispatcher.cancel(self.run_id)
            self._cancel_unfinished()
            self.store.set_run_state(self.run_id, State.CANCELLED, error="interrupted")
            raise
        if outcome != State.SUCCEEDED:
            self.dispatcher.cancel(self.run_id)
            self._cancel_unfinished()
            errors = "; ".join(f"block {b.index}: {b.error}" for b in self.store.get_blocks(self.run_id) if b.error)
            self.store.set_run_state(self.run_id, outcome, error=errors)
            self.log(f"run {self.run_id} {outcome}: {errors}")
            return outcome
        return self._assemble_and_sample()

    def _until_blocks_finish(self) -> State:
        last_log = 0.0
        while True:
            blocks = self.store.get_blocks(self.run_id)
            outcome = run_outcome(blocks)
            if outcome is not None:
                return outcome
            in_flight = self.dispatcher.in_flight(self.run_id)
            for index in launches(blocks, in_flight, self.demand, self._capacity()):
                self._launch(blocks[index])
            for result in self.dispatcher.wait(self.poll_s):
                self._on_outcome(result)
            self._poll_progress()
            if time.monotonic() - last_log > 15:
                last_log = time.monotonic()
                self._log_progress()

    def _capacity(self) -> Demand:
        capacity = self.dispatcher.capacity()
        if self.max_in_flight is None:
            return capacity
        limit = self.demand.times(self.max_in_flight)
        return Demand(min(capacity.cpu, limit.cpu), min(capacity.gpu, limit.gpu))

    def _launch(self, block: BlockRecord) -> None:
        job = BlockJob(run_id=self.run_id, config=self.config, block=self.specs[block.index])
        name = self.dispatcher.submit(job, checkpoint_root(self.run_dir))
        attempt = block.attempt + 1 if block.state == State.PENDING else block.attempt
        self.store.transition_block(self.run_id, block.index, State.RUNNING, attempt=attempt, ray_name=name,
                                    error="", launched_at=time.time())
        self.log(f"block {block.index}: launched {name} (attempt {attempt})")

    def _on_outcome(self, result: Outcome) -> None:
        index = result.key[1]
        block = self.store.get_blocks(self.run_id)[index]
        if result.ok:
            try:
                file, digest = collect_block(result.checkpoint_path, self.run_dir, self.specs[index])
            except (CheckpointError, OSError) as err:
                result = Outcome(result.key, False, None, result.metrics, f"collect failed: {err}", result.node)
            else:
                self.store.transition_block(
                    self.run_id, index, State.SUCCEEDED, checkpoint=result.checkpoint_path, weights_file=file,
                    sha256=digest, step=int(result.metrics.get("step", block.step)),
                    loss=result.metrics.get("loss"), node=result.node, finished_at=time.time(),
                    train_s=result.metrics.get("train_s", 0.0), first_step_at=result.metrics.get("first_step_at") or 0.0)
                self.log(f"block {index}: SUCCEEDED at step {result.metrics.get('step')} "
                         f"loss {result.metrics.get('loss', float('nan')):.4f}")
                return
        state = after_failure(block, self.config.train.max_attempts)
        self.store.transition_block(self.run_id, index, state, error=result.error or "unknown error")
        self.log(f"block {index}: attempt {block.attempt} failed ({result.error}); now {state}")

    def _poll_progress(self) -> None:
        for index in self.dispatcher.in_flight(self.run_id):
            job = BlockJob(run_id=self.run_id, config=self.config, block=self.specs[index])
            path = Path(progress_path(checkpoint_root(self.run_dir), job))
            try:
                metrics = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            self.store.update_progress(self.run_id, index, step=metrics["step"], loss=metrics["loss"],
                                       resumed_from_step=metrics.get("resumed_from_step", 0),
                                       first_step_at=metrics.get("first_step_at") or 0.0)

    def _log_progress(self) -> None:
        parts = []
        for b in self.store.get_blocks(self.run_id):
            loss = f" loss {b.loss:.3f}" if b.loss is not None else ""
            parts.append(f"[{b.index}] {b.state} {b.step}/{b.total_steps}{loss}")
        self.log("  ".join(parts))

    def _cancel_unfinished(self) -> None:
        for b in self.store.get_blocks(self.run_id):
            if b.state in (State.PENDING, State.RUNNING):
                self.store.transition_block(self.run_id, b.index, State.CANCELLED)

    def _assemble_and_sample(self) -> State:
        started = time.perf_counter()
        manifest = assemble(self.config, self.specs, boundaries(self.config), self.store.get_blocks(self.run_id),
                            self.run_dir)
        png = write_samples_png(self.run_dir, self.config)
        self.store.set_run_state(self.run_id, State.SUCCEEDED, assembly_s=time.perf_counter() - started)
        self.log(f"run {self.run_id} SUCCEEDED: {len(manifest['blocks'])} blocks assembled, samples in {png}")
        return State.SUCCEEDED
