"""Durable state in Redis: the only package that talks to it. `store.py` the records and their transitions (fenced
writes), `lease.py` the leader lease, `connection.py` the client."""

from coordinator.store.connection import RoundTrips, close_embedded, connect
from coordinator.store.store import EVENTS_MAXLEN, STORE_UNAVAILABLE, NotLeader, Store, TransitionError

__all__ = [
    "EVENTS_MAXLEN",
    "STORE_UNAVAILABLE",
    "NotLeader",
    "RoundTrips",
    "Store",
    "TransitionError",
    "close_embedded",
    "connect",
]
