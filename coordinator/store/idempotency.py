"""Idempotency-Keys of `POST /v1/runs`: `<p>:idempotency:<sha256 of the key>` maps a client's key to the
(run id, config hash) of the first request that used it, for its TTL; the run remembers its key
(`<p>:run:<id>:idempotency_key`), so deleting the run frees the key."""

from __future__ import annotations

import hashlib
import json


class IdempotencyKeys:
    """The Idempotency-Key operations of `Store` (which gives `client`, `prefix` and `run_key`)."""

    def idempotency_key(self, key: str) -> str:
        return f"{self.prefix}:idempotency:{hashlib.sha256(key.encode()).hexdigest()}"

    def claim_idempotency_key(self, key: str, run_id: str, config_hash: str, ttl_s: float) -> tuple[str, str]:
        """Map a client's Idempotency-Key to `run_id` unless it is already mapped; returns the (run id, config
        hash) it maps to now: ours when the key was new, the first request's otherwise."""
        value = json.dumps([run_id, config_hash])
        if self.client.set(self.idempotency_key(key), value, nx=True, px=int(ttl_s * 1000)):
            # the run remembers its key, so that deleting the run frees the key (a retry then creates a new run
            # rather than answering with the id of a run that is gone)
            self.client.set(f"{self.run_key(run_id)}:idempotency_key", key, px=int(ttl_s * 1000))
            return run_id, config_hash
        stored = self.client.get(self.idempotency_key(key))
        if stored is None:  # expired between the two calls: claim it again
            return self.claim_idempotency_key(key, run_id, config_hash, ttl_s)
        first_run, first_hash = json.loads(stored)
        return first_run, first_hash

    def release_idempotency_key(self, key: str, run_id: str) -> None:
        """Forget a claim whose run could not be created (only if it is still ours)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(f"{self.run_key(run_id)}:idempotency_key")
        self._release(pipe, key, run_id)
        pipe.execute()

    def _release(self, pipe, key: str, run_id: str) -> None:
        """Queue the deletion of an Idempotency-Key's mapping if it maps to `run_id` (read now, outside `pipe`)."""
        stored = self.client.get(self.idempotency_key(key))
        if stored is not None and json.loads(stored)[0] == run_id:
            pipe.delete(self.idempotency_key(key))
