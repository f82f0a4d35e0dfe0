"""The coordinator loop over every active run: read state -> decide -> act, one tick at a time.

All Ray dispatch goes through here. Admission is global: a block starts only if what all in-flight blocks hold
plus its own demand fits the cluster (Ray alone would queue a trainer and retry every 60 s).

Leadership (with `lease_ttl_s`): only the holder of the Redis leader lease reconciles. A thread renews the lease on
its own cadence (a third of the TTL), whatever a tick is doing; every write the coordinator makes is fenced by the
lease's value (coordinator/store.py), so a coordinator that lost the lease (paused past its TTL, cut off from Redis)
has its writes refused, and steps down: it forgets its runs and its handles on block jobs without stopping them.
The next leader re-attaches to the block jobs still running (they are detached from any coordinator) and resumes
every unfinished run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from coordinator.jobs import Dispatcher
from coordinator.metrics import Metrics
from coordinator.reconcile import Resources, free
from coordinator.records import TERMINAL, State
from coordinator.runner import RunReconciler
from coordinator.store import STORE_UNAVAILABLE, NotLeader, Store, TransitionError

Log = Callable[[str], None]
EXPIRY_EVERY_S = 60.0  # how often the leader looks for runs past their retention
MAX_ASSEMBLY_STARTS = 2  # assemblies of one run that may begin without finishing before the run fails


def assembly_starts(events: list[dict]) -> int:
    """Assemblies begun since the run's blocks last trained (a retrain starts the count afresh)."""
    starts = 0
    for event in events:
        starts = 0 if event["kind"] == "block_retrain" else starts + (event["kind"] == "assembly_started")
    return starts


class RunNotSucceeded(RuntimeError):
    """A run driven to its end finished FAILED or CANCELLED."""


class LeaseKeeper:
    """Renews a held lease every `ttl_s / 3` in its own thread, independent of the loop's work (a tick that runs
    long does not let the lease lapse). `lost` is set once a renewal finds the lease gone or another's."""

    def __init__(self, store: Store, lease: str, ttl_s: float):
        self.store, self.lease, self.ttl_s = store, lease, ttl_s
        self.renewed_at = time.monotonic()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                asked = time.monotonic()
                if not self.store.renew_lease(self.lease, self.ttl_s):
                    self.lost.set()
                    return
                self.renewed_at = asked
            except STORE_UNAVAILABLE:  # try again next time; past the TTL the lease is gone and renewal says so
                continue

    def held(self) -> bool:
        """Whether the lease is surely still ours: not found lost, and renewed within its TTL (a process paused
        past the TTL, or cut off from Redis, must assume another has it)."""
        return not self.lost.is_set() and time.monotonic() - self.renewed_at < self.ttl_s

    def stop(self) -> None:
        self._stop.set()


class Coordinator:
    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        log: Log = print,
        poll_s: float = 1.0,
        max_in_flight: int | None = None,
        only_runs: set[str] | None = None,
        lease_ttl_s: float | None = None,
        progress_every_s: float = 15.0,
        metrics: Metrics | None = None,
        retention_s: float | None = None,
    ):
        # `store` as given (unfenced); `self.store` is the one every reconcile write goes through: fenced by the
        # lease while this coordinator leads (with a lease), else the same store
        self.base_store = self.store = store
        self.dispatcher, self.log, self.poll_s = dispatcher, log, poll_s
        self.max_in_flight = max_in_flight
        self.only_runs = only_runs
        self.lease_ttl_s = lease_ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.keeper: LeaseKeeper | None = None
        self.progress_every_s = progress_every_s
        self.reconcilers: dict[str, RunReconciler] = {}
        self.metrics = metrics or Metrics()
        self.retention_s = retention_s
        # Assembly, its samples and pictures take seconds to minutes: they run beside the loop, one run at a time,
        # so a tick never waits for them (admission, polling and cancelling go on for every other run).
        self.assembler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assemble")
        self.assembling: dict[str, Future] = {}
        self._last_progress = self._last_expiry = 0.0
        self.last_tick_ok = time.monotonic()

    def active_runs(self) -> list[str]:
        runs = self.store.active_runs()
        return [r for r in runs if self.only_runs is None or r in self.only_runs]

    def lead(self) -> bool:
        """Whether this coordinator leads now: it holds the lease (taking it when free) or needs none."""
        if self.lease_ttl_s is None:
            return True
        if self.keeper is not None and not self.keeper.held():
            self.step_down("the lease was lost or not renewed within its TTL")
        if self.keeper is None:
            lease = self.base_store.acquire_lease(self.holder, self.lease_ttl_s)
            if lease is None:
                return False
            self.keeper = LeaseKeeper(self.base_store, lease, self.lease_ttl_s)
            self.store = self.base_store.fenced(lease)
            self.log(f"leading with lease {lease}")
        return True

    def step_down(self, why: str) -> None:
        """Stop acting as leader: forget every run and every block-job handle (the jobs go on; the next leader
        re-attaches to them) and write nothing more under the old lease."""
        if self.keeper is not None:
            self.keeper.stop()
            self.log(f"stepped down ({why}): lease {self.keeper.lease} is no longer ours")
        self.keeper = None
        self.store = self.base_store
        self.reconcilers.clear()
        self.assembling.clear()  # a running assembly's writes are refused by the fence
        self.dispatcher.forget()
        self.metrics.leader.set(0)

    def tick(self) -> None:
        if not self.lead():
            self.metrics.leader.set(0)
            time.sleep(self.poll_s)
            self.last_tick_ok = time.monotonic()
            return
        self.metrics.leader.set(1)
        try:
            self._reconcile()
        except NotLeader as err:
            self.step_down(str(err))

    def _reconcile(self) -> None:
        started = time.perf_counter()
        if self.retention_s is not None and time.monotonic() - self._last_expiry > EXPIRY_EVERY_S:
            self._last_expiry = time.monotonic()
            self.expire_runs()
        for run_id in self.active_runs():
            if run_id not in self.reconcilers:
                self._isolated(run_id, "loading the run", self._add_reconciler, run_id)
        active = list(self.reconcilers)
        live = [r for r in active if r not in self.assembling]  # (an assembling run's reconciler is the assembler's)
        snapshots = self.store.run_snapshots({r: self.reconcilers[r].num_blocks for r in live})  # one round trip
        for run_id in live:
            self.reconcilers[run_id].prime(*snapshots[run_id])
        capacity = self.dispatcher.capacity()
        self._observe(active, capacity)
        available = free(capacity, self.dispatcher.held())
        slots = None if self.max_in_flight is None else max(0, self.max_in_flight - self.dispatcher.num_in_flight())
        for run_id in active:
            rec = self.reconcilers.get(run_id)
            if rec is not None and rec.outcome() is None:
                launched = self._isolated(run_id, "admitting blocks", rec.launch_ready, capacity, available, slots)
                if launched is not None:
                    available, count = launched
                    slots = None if slots is None else slots - count
        waiting = time.perf_counter()
        results = self.dispatcher.wait(self.poll_s)
        waited = time.perf_counter() - waiting
        for result in results:
            if result.run_id in self.reconcilers:
                self._isolated(result.run_id, "collecting a block", self.reconcilers[result.run_id].on_result, result)
        for run_id in active:
            if run_id in self.reconcilers:
                self._isolated(run_id, "polling and finishing", self._advance, run_id)
        self.metrics.tick.observe(time.perf_counter() - started - waited)
        self.last_tick_ok = time.monotonic()
        if time.monotonic() - self._last_progress > self.progress_every_s:
            self._last_progress = time.monotonic()
            for run_id, rec in self.reconcilers.items():
                self.log(f"[{run_id}] {rec.progress_line()}")

    def expire_runs(self, limit: int = 100) -> list[str]:
        """Forget the records of up to `limit` runs that ended more than `retention_s` ago (DBLOCKS_RUN_RETENTION_
        DAYS). Their run directories stay: they hold the trained models (`dblocks delete --files` removes one)."""
        expired = []
        for run_id in self.store.ended_before(time.time() - self.retention_s, limit):
            try:
                self.store.delete_run(run_id)
            except (KeyError, TransitionError):  # deleted meanwhile, or retrained meanwhile: not ours to expire
                continue
            expired.append(run_id)
        if expired:
            self.log(f"expired the records of {len(expired)} runs ended over {self.retention_s / 86400:g} days ago")
        return expired

    def _add_reconciler(self, run_id: str) -> None:
        self.reconcilers[run_id] = RunReconciler(
            run_id,
            store=self.store,
            dispatcher=self.dispatcher,
            log=lambda m, r=run_id: self.log(f"[{r}] {m}"),
            metrics=self.metrics,
        )

    def _advance(self, run_id: str) -> None:
        rec = self.reconcilers[run_id]
        assembly = self.assembling.get(run_id)
        if assembly is not None:  # its blocks are done; nothing else to do for it until the assembly ends
            if assembly.done():
                del self.assembling[run_id], self.reconcilers[run_id]
                assembly.result()  # an unexpected error fails the run (see _isolated); expected ones already did
            return
        rec.poll_progress()
        final_state = rec.outcome()
        if final_state == State.SUCCEEDED:
            # The run stays RUNNING until the assembly has written everything: a coordinator that dies meanwhile
            # leaves it RUNNING with every block SUCCEEDED, and the next one assembles it again from the start,
            # unless assemblies of this run have already begun MAX_ASSEMBLY_STARTS times (each killed its
            # coordinator, say out of memory): then the run fails with the reason instead of looping.
            starts = assembly_starts(self.store.events(run_id))
            if starts >= MAX_ASSEMBLY_STARTS:
                reason = (
                    f"assembly began {starts} times and never finished (its coordinator died each time: out of "
                    "memory?); not tried again. Retrain a block or lower sample.num_per_class to try once more"
                )
                self.log(f"[{run_id}] {reason}")
                self.store.set_run_state(run_id, State.FAILED, error=reason)
                self.metrics.run_failures.inc()
                del self.reconcilers[run_id]
                return
            lease = self.keeper.lease if self.keeper is not None else ""
            self.store.record_event(run_id, "assembly_started", lease=lease)  # which leadership assembled it
            self.assembling[run_id] = self.assembler.submit(rec.finish, final_state)
        elif final_state is not None:
            rec.finish(final_state)
            del self.reconcilers[run_id]

    def _isolated(self, run_id: str, phase: str, step, *args):
        """Run one run's step; if it raises (anything but the store being unreachable, which stops the whole
        tick), that run alone fails with the reason, and the loop goes on with the others."""
        try:
            return step(*args)
        except (*STORE_UNAVAILABLE, NotLeader):
            raise
        except Exception as err:
            reason = f"internal error while {phase}: {type(err).__name__}: {err}"
            self.log(f"[{run_id}] {reason}")
            self.reconcilers.pop(run_id, None)
            self.assembling.pop(run_id, None)
            self.dispatcher.cancel(run_id)
            self.store.set_run_state(run_id, State.FAILED, error=reason[:2000])
            self.metrics.run_failures.inc()
            return None

    def healthy(self, max_age_s: float) -> bool:
        """Whether a tick has completed within `max_age_s` (ticks that wait for the leader lease count)."""
        return time.monotonic() - self.last_tick_ok < max_age_s

    def _observe(self, active: list[str], capacity: Resources) -> None:
        m = self.metrics
        m.cluster_cpus.set(capacity.cpu)
        m.cluster_gpus.set(capacity.gpu)
        m.cluster_memory.set(capacity.memory)
        m.in_flight.set(sum(len(self.dispatcher.in_flight(r)) for r in active))
        runs = self.store.run_counts()
        blocks = {state: 0 for state in State}
        assembling = {r: self.reconcilers[r].num_blocks for r in active if r in self.assembling}
        states = [b.state for r in active if r in self.reconcilers and r not in assembling
                  for b in self.reconcilers[r].blocks()]  # fmt: skip
        for state in states + self.store.block_states(assembling):  # the tick's own reads; assembling ones anew
            blocks[state] += 1
        for state in State:
            m.runs.labels(str(state)).set(runs[state])
            m.blocks.labels(str(state)).set(blocks[state])

    def run_until_done(
        self, run_id: str, on_tick: Callable[[], None] | None = None, *, require_success: bool = False
    ) -> State:
        """Tick until `run_id` is terminal (the standalone `dblocks train` path); with `require_success`, a run
        that ends other than SUCCEEDED raises `RunNotSucceeded` with its error."""
        try:
            while True:
                run = self.store.get_run(run_id)
                if run.state in TERMINAL:
                    if require_success and run.state != State.SUCCEEDED:
                        raise RunNotSucceeded(f"run {run_id} ended {run.state}: {run.error}")
                    return run.state
                self.tick()
                if on_tick is not None:
                    on_tick()
        except KeyboardInterrupt:
            self.store.request_cancel(run_id)
            RunReconciler(run_id, store=self.store, dispatcher=self.dispatcher, log=self.log).finish(State.CANCELLED)
            raise

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception as err:  # keep serving; the next tick re-reads all state from Redis
                self.log(f"reconcile error: {type(err).__name__}: {err}")
                time.sleep(self.poll_s)
        self.assembler.shutdown(wait=False, cancel_futures=True)
        if self.keeper is not None:
            self.keeper.stop()
            self.base_store.release_lease(self.keeper.lease)
