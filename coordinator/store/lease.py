"""The leader lease: one coordinator at a time holds `<p>:leader` ("<holder>#<fencing token>"), renewing it before
its TTL runs out; each new leadership gets a larger fencing token (`<p>:leader:token`), and a fenced store's writes
go through only while the lease still holds its own value (`store.py`)."""

from __future__ import annotations

_ACQUIRE_LEASE = """
if redis.call('exists', KEYS[1]) == 1 then return false end
local value = ARGV[1] .. '#' .. redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], value, 'PX', ARGV[2])
return value
"""
_RENEW_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LeaderLease:
    """The lease operations of `Store` (which gives `client` and `leader_key`)."""

    def acquire_lease(self, holder: str, ttl_s: float) -> str | None:
        """Take the leader lease if nobody holds it: its value, "<holder>#<fencing token>", with a token larger
        than any handed out before; None if another holds it. Expires after `ttl_s` unless renewed."""
        value = self.client.eval(
            _ACQUIRE_LEASE, 2, self.leader_key(), f"{self.leader_key()}:token", holder, int(ttl_s * 1000)
        )
        return value.decode() if value else None

    def renew_lease(self, lease: str, ttl_s: float) -> bool:
        """Extend the lease if it still holds `lease`; False once it expired or passed to another."""
        return bool(self.client.eval(_RENEW_LEASE, 1, self.leader_key(), lease, int(ttl_s * 1000)))

    def release_lease(self, lease: str) -> None:
        self.client.eval(_RELEASE_LEASE, 1, self.leader_key(), lease)

    def leader(self) -> str | None:
        value = self.client.get(self.leader_key())
        return value.decode() if value else None
