"""All durable state, in Redis, under one key prefix: the runs, their blocks and events (the leader lease in
`lease.py`, Idempotency-Keys in `idempotency.py`, the client in `connection.py`; this package is the only code
that talks to Redis).

Keys (prefix "dblocks" by default):
    <p>:runs                      sorted set of run ids by creation time
    <p>:active                    sorted set of the runs not yet finished, by creation time (what a tick reads)
    <p>:ended:<STATE>             sorted sets of the SUCCEEDED, FAILED and CANCELLED runs, by when they ended
                                  (counts for the metrics, and expiry, without reading any run)
    <p>:run:<id>                  hash: the run record
    <p>:run:<id>:block:<i>        hash: one block job record
    <p>:run:<id>:events           stream: append-only event log of the run
    <p>:leader                    the leader lease: "<holder>#<fencing token>", expiring after its TTL
    <p>:leader:token              the last fencing token handed out (INCR: each new leadership gets a larger one)
Every state change writes the record(s) and its event in one MULTI/EXEC transaction. A coordinator's store is
*fenced* (`Store.fenced`): each of its writes WATCHes the lease and goes through only while the lease still holds
its own value, so a coordinator that lost the lease (paused past its TTL, cut off) cannot change anything once
another has taken over: the write raises `NotLeader` and nothing of it is applied.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields

import redis

from coordinator.records import BLOCK_TRANSITIONS, TERMINAL, BlockRecord, RunRecord, State
from coordinator.store.idempotency import IdempotencyKeys
from coordinator.store.lease import LeaderLease

EVENTS_MAXLEN = 10_000
# Errors that mean Redis itself is unreachable (not that one record is bad): the reconcile loop stops its tick.
STORE_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError)


class TransitionError(RuntimeError):
    pass


class NotLeader(RuntimeError):
    """A fenced write was refused: the lease this store writes under has expired or passed to another
    coordinator. Nothing of the write was applied; the coordinator steps down."""


def _encode(record) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in asdict(record).items()}


def _decode(cls, raw: dict[bytes, bytes]):
    known = {f.name for f in fields(cls)}
    values = {k.decode(): json.loads(v) for k, v in raw.items() if k.decode() in known}
    values["state"] = State(values["state"])
    return cls(**values)


class Store(LeaderLease, IdempotencyKeys):
    def __init__(self, client: redis.Redis, prefix: str = "dblocks", fence: str | None = None):
        self.client = client
        self.prefix = prefix
        self.fence = fence  # the lease value every write is conditioned on (None: unfenced, e.g. the API's)

    def fenced(self, lease: str) -> Store:
        """The same store whose writes all go through only while the leader lease still holds `lease`."""
        return Store(self.client, self.prefix, fence=lease)

    # Keys
    def runs_key(self) -> str:
        return f"{self.prefix}:runs"

    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def block_key(self, run_id: str, index: int) -> str:
        return f"{self.prefix}:run:{run_id}:block:{index}"

    def events_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:events"

    def active_key(self) -> str:
        return f"{self.prefix}:active"

    def leader_key(self) -> str:
        return f"{self.prefix}:leader"

    def ended_key(self, state: State) -> str:
        return f"{self.prefix}:ended:{state}"

    def ended_keys(self) -> list[str]:
        return [self.ended_key(state) for state in sorted(TERMINAL)]

    # Reads
    def get_run(self, run_id: str) -> RunRecord | None:
        raw = self.client.hgetall(self.run_key(run_id))
        return _decode(RunRecord, raw) if raw else None

    def list_runs(self) -> list[str]:
        return [r.decode() for r in self.client.zrange(self.runs_key(), 0, -1)]

    def recent_runs(self, limit: int) -> list[RunRecord]:
        """The `limit` most recently created runs, oldest of them first, in one round trip for the records."""
        ids = [r.decode() for r in self.client.zrange(self.runs_key(), -limit, -1)]
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(self.run_key(run_id))
        return [_decode(RunRecord, raw) for raw in pipe.execute() if raw]

    def get_blocks(self, run_id: str, num_blocks: int | None = None) -> list[BlockRecord]:
        """A run's block records, in one round trip when `num_blocks` is known (else one more, for the run)."""
        if num_blocks is None:
            run = self.get_run(run_id)
            if run is None:
                return []
            num_blocks = run.num_blocks
        return self.run_snapshots({run_id: num_blocks})[run_id][1]

    def run_snapshots(self, blocks_of: dict[str, int]) -> dict[str, tuple[tuple[State, bool] | None, list]]:
        """What a tick reads of each run in `blocks_of` (run id -> number of blocks), in one round trip: its
        (state, cancel requested) as `run_status` (None: gone meanwhile), and its block records."""
        pipe = self.client.pipeline(transaction=False)
        for run_id, num_blocks in blocks_of.items():
            pipe.hmget(self.run_key(run_id), ["state", "cancel_requested"])
            for index in range(num_blocks):
                pipe.hgetall(self.block_key(run_id, index))
        replies, snapshots = iter(pipe.execute()), {}
        for run_id, num_blocks in blocks_of.items():
            (state, cancel), raw = next(replies), [next(replies) for _ in range(num_blocks)]
            status = None if state is None else (State(json.loads(state)), bool(json.loads(cancel or "false")))
            snapshots[run_id] = (status, [_decode(BlockRecord, r) for r in raw if r])
        return snapshots

    def run_status(self, run_id: str) -> tuple[State, bool]:
        """A run's state and whether a cancel was requested, without reading (and decoding) its config."""
        state, cancel = self.client.hmget(self.run_key(run_id), ["state", "cancel_requested"])
        if state is None:
            raise KeyError(run_id)
        return State(json.loads(state)), bool(json.loads(cancel or "false"))

    def block_states(self, blocks_of: dict[str, int]) -> list[State]:
        """The state of every block of the runs in `blocks_of` (run id -> number of blocks), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for run_id, num_blocks in blocks_of.items():
            for index in range(num_blocks):
                pipe.hget(self.block_key(run_id, index), "state")
        return [State(json.loads(state)) for state in pipe.execute() if state is not None]

    def active_runs(self) -> list[str]:
        """Runs that are not terminal, oldest first: one read of the active index, whatever the number of runs
        that have ended (a tick costs nothing per finished run)."""
        if not self.client.exists(f"{self.prefix}:indexed"):
            self._index_runs()
        return [r.decode() for r in self.client.zrange(self.active_key(), 0, -1)]

    def _index_runs(self) -> None:
        """Build the active and finished indexes from the run records, once (records written before they
        existed)."""
        ids = self.list_runs()
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hmget(self.run_key(run_id), ["state", "created_at", "updated_at"])
        pipe2 = self.client.pipeline(transaction=True)
        for run_id, (state, created, updated) in zip(ids, pipe.execute()):
            if state is None:
                continue
            if (state := State(json.loads(state))) in TERMINAL:
                pipe2.zadd(self.ended_key(state), {run_id: json.loads(updated or "0")})
            else:
                pipe2.zadd(self.active_key(), {run_id: json.loads(created or "0")})
        pipe2.set(f"{self.prefix}:indexed", "1")
        pipe2.execute()

    def ended_before(self, cutoff: float, limit: int = 100) -> list[str]:
        """Up to `limit` runs that ended (in any terminal state) before `cutoff`, unix seconds."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.ended_keys():
            pipe.zrangebyscore(key, "-inf", cutoff, 0, limit)
        return sorted({r.decode() for found in pipe.execute() for r in found})[:limit]

    def run_counts(self) -> dict[State, int]:
        """How many runs are in each state: the active ones read one by one, the ended ones counted (O(1) each)."""
        counts = {state: 0 for state in State}
        active = self.active_runs()
        pipe = self.client.pipeline(transaction=False)
        for run_id in active:
            pipe.hget(self.run_key(run_id), "state")
        for key in self.ended_keys():
            pipe.zcard(key)
        answers = pipe.execute()
        for state in answers[: len(active)]:
            if state is not None:
                counts[State(json.loads(state))] += 1
        for state, count in zip(sorted(TERMINAL), answers[len(active) :]):
            counts[state] = count
        return counts

    def events(self, run_id: str) -> list[dict]:
        return [
            {"id": eid.decode(), **{k.decode(): v.decode() for k, v in data.items()}}
            for eid, data in self.client.xrange(self.events_key(run_id))
        ]

    # Writes (each one transaction, with its event)
    def _guard(self, pipe, *keys: str) -> None:
        """WATCH `keys` (and the lease, when fenced) on `pipe`; raise NotLeader now if the lease is not ours.
        A change to any of them (the lease expiring included) before EXEC aborts the transaction."""
        if self.fence is None:
            if keys:
                pipe.watch(*keys)
            return
        pipe.watch(self.leader_key(), *keys)
        current = pipe.get(self.leader_key())
        if current is None or current.decode() != self.fence:
            raise NotLeader(f"the lease {self.fence!r} is no longer held (now {current!r})")

    def _commit(self, write) -> None:
        """One transaction: `write(pipe)` queues the commands; fenced, it applies only under our lease."""
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    self._guard(pipe)
                    pipe.multi()
                    write(pipe)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def create_run(self, run: RunRecord, blocks: list[BlockRecord]) -> None:
        now = time.time()
        run.created_at = run.updated_at = now
        run.num_blocks = len(blocks)
        if not self.client.hsetnx(self.run_key(run.id), "id", json.dumps(run.id)):
            raise TransitionError(f"run {run.id} already exists")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.run_key(run.id), mapping=_encode(run))
        for block in blocks:
            block.updated_at = now
            pipe.hset(self.block_key(run.id, block.index), mapping=_encode(block))
        pipe.zadd(self.runs_key(), {run.id: now})
        pipe.zadd(self.active_key(), {run.id: now})
        self._event(pipe, run.id, "run_created", num_blocks=len(blocks))
        pipe.execute()

    def set_run_state(self, run_id: str, state: State, **changes) -> None:
        now = time.time()

        def write(pipe) -> None:
            pipe.hset(
                self.run_key(run_id),
                mapping={k: json.dumps(v) for k, v in {"state": state, "updated_at": now, **changes}.items()},
            )
            if state in TERMINAL:
                for key in (self.active_key(), *self.ended_keys()):
                    pipe.zrem(key, run_id)
                pipe.zadd(self.ended_key(state), {run_id: now})
            self._event(pipe, run_id, "run_state", state=state, **changes)

        self._commit(write)

    def transition_block(self, run_id: str, index: int, to: State, **changes) -> BlockRecord:
        """Move one block to `to` (checked against BLOCK_TRANSITIONS under WATCH), with its event."""
        key = self.block_key(run_id, index)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    self._guard(pipe, key)
                    current = _decode(BlockRecord, pipe.hgetall(key))
                    if to not in BLOCK_TRANSITIONS[current.state]:
                        raise TransitionError(f"block {index} of {run_id}: {current.state} -> {to} not allowed")
                    updated = BlockRecord(**{**asdict(current), **changes, "state": to, "updated_at": time.time()})
                    pipe.multi()
                    pipe.hset(key, mapping=_encode(updated))
                    self._event(pipe, run_id, "block_state", block=index, state=to, **changes)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    def delete_run(self, run_id: str) -> None:
        """Remove a finished (or failed, or cancelled) run's records: the run, its blocks, its events and its place
        in the index, in one transaction that fails if the run left its terminal state meanwhile (a retrain)."""
        run_key = self.run_key(run_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    self._guard(pipe, run_key)
                    raw = pipe.hgetall(run_key)
                    if not raw:
                        raise KeyError(run_id)
                    run = _decode(RunRecord, raw)
                    if run.state not in TERMINAL:
                        raise TransitionError(f"run {run_id} is {run.state}: cancel it first, or wait for it to end")
                    claimed = pipe.get(f"{run_key}:idempotency_key")
                    pipe.multi()
                    pipe.delete(run_key, self.events_key(run_id), f"{run_key}:idempotency_key")
                    if claimed is not None:
                        self._release(pipe, claimed.decode(), run_id)
                    pipe.delete(*[self.block_key(run_id, i) for i in range(run.num_blocks)] or [run_key])
                    for index in (self.runs_key(), self.active_key(), *self.ended_keys()):
                        pipe.zrem(index, run_id)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def request_cancel(self, run_id: str) -> None:
        """Durable cancel request; the coordinator's loop acts on it (stops jobs, marks blocks CANCELLED). KeyError
        when the run is gone: a cancel racing a delete or an expiry never leaves a record with no state behind."""
        run_key = self.run_key(run_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(run_key)
                    if not pipe.exists(run_key):
                        raise KeyError(run_id)
                    pipe.multi()
                    pipe.hset(run_key, "cancel_requested", json.dumps(True))
                    self._event(pipe, run_id, "cancel_requested")
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def reopen_block(self, run_id: str, index: int, *, from_scratch: bool, total_steps: int) -> BlockRecord:
        """Retrain one block: a finished block goes back to PENDING and its run to PENDING, atomically.

        From scratch bumps the block's generation (a new Ray run name: no checkpoint is reused); otherwise the
        block resumes from its last checkpoint and trains on to `total_steps`."""
        block_key, run_key = self.block_key(run_id, index), self.run_key(run_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    self._guard(pipe, block_key, run_key)
                    run = _decode(RunRecord, pipe.hgetall(run_key))
                    block = _decode(BlockRecord, pipe.hgetall(block_key))
                    if run.state not in TERMINAL or block.state not in TERMINAL:
                        raise TransitionError(
                            f"run {run_id} is {run.state} and block {index} {block.state}: "
                            "retrain a block of a finished run"
                        )
                    reopened = BlockRecord(
                        **{
                            **asdict(block),
                            "state": State.PENDING,
                            "attempt": 0,
                            "error": "",
                            "generation": block.generation + (1 if from_scratch else 0),
                            "total_steps": total_steps,
                            "resumed_from_step": 0,
                            "step": 0 if from_scratch else block.step,
                            "updated_at": time.time(),
                        }
                    )
                    pipe.multi()
                    pipe.hset(block_key, mapping=_encode(reopened))
                    pipe.hset(
                        run_key,
                        mapping={
                            "state": json.dumps(State.PENDING),
                            "error": json.dumps(""),
                            "cancel_requested": json.dumps(False),
                            "updated_at": json.dumps(time.time()),
                        },
                    )
                    for key in self.ended_keys():
                        pipe.zrem(key, run_id)
                    pipe.zadd(self.active_key(), {run_id: run.created_at})
                    self._event(
                        pipe, run_id, "block_retrain", block=index, from_scratch=from_scratch, total_steps=total_steps
                    )
                    pipe.execute()
                    return reopened
                except redis.WatchError:
                    continue

    def update_progress(self, run_id: str, index: int, **progress) -> None:
        """Live progress (step, loss, ...): no state change, no event."""
        self.update_progress_many(run_id, {index: progress})

    def update_progress_many(self, run_id: str, progress: dict[int, dict]) -> None:
        """Live progress of several blocks of a run (block index -> fields), in one transaction."""
        now = time.time()

        def write(pipe) -> None:
            for index, fields_ in progress.items():
                mapping = {k: json.dumps(v) for k, v in {**fields_, "updated_at": now}.items()}
                pipe.hset(self.block_key(run_id, index), mapping=mapping)

        if progress:
            self._commit(write)

    def record_event(self, run_id: str, kind: str, **data) -> None:
        """An event alone (no record changes with it), e.g. that a run's assembly started."""
        self._commit(lambda pipe: self._event(pipe, run_id, kind, **data))

    def _event(self, pipe, run_id: str, kind: str, **data) -> None:
        payload = {"kind": kind, "time": repr(time.time()), **{k: str(v) for k, v in data.items()}}
        pipe.xadd(self.events_key(run_id), payload, maxlen=EVENTS_MAXLEN, approximate=True)
