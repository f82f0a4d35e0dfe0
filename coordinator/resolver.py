"""Resolving a submitted config's data outside the coordinator's process. The sources a caller names are confined
to the operator's roots, then opened, measured and checked (`shared.data.resolve_data`) in a child process with its
own memory and time limits: a hostile or broken source fails its own request (DataError: 422) and leaves the
service's memory where it was, and a slow one never holds the reconcile loop. Children fork from a forkserver that
has the data modules imported once, so a request costs a fork (tens of ms), not an import (seconds).

A config that names no source (a built-in dataset or corpus) is resolved in the process: there is nothing to read
that the project did not ship.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import resource
import threading
import traceback
from multiprocessing import forkserver

from shared.config import Config, ConfigError, parse_config
from shared.data import DataError
from shared.data.resolve import confine_sources
from shared.tasks import resolve_data, task_sources

log = logging.getLogger(__name__)

PRELOAD = ["shared.config", "shared.tasks"]
MEMORY_MB = 1024  # what resolving one submitted config may allocate beyond the imported modules
TIMEOUT_S = 60.0  # what resolving one submitted config may take
MAX_CONCURRENT = 2  # resolutions at once; beyond this a submit with a source waits for a slot, up to TIMEOUT_S


class ResolverBusy(Exception):
    """Every resolution slot stayed taken: the caller should retry (429)."""


def _private_memory_bytes() -> int:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmData:\s+(\d+) kB", status.read()).group(1)) * 1024


def _child(conn, raw: dict, roots: tuple[str, ...] | None, memory_bytes: int, latent_cache: str | None) -> None:
    """In the child: cap private memory (RLIMIT_DATA: heap and anonymous mappings; a memory-mapped .npy is not
    counted), resolve, send ("ok", config) or (kind, message). `latent_cache`: where the caches of the runs the
    service encodes go (shared/latent/cache.py), as this service was configured."""
    if latent_cache:
        from shared.latent.cache import use_cache_root

        use_cache_root(latent_cache)
    limit = _private_memory_bytes() + memory_bytes
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        conn.send(("ok", resolve_data(parse_config(raw), roots=roots).model_dump()))
    except DataError as err:
        conn.send(("error", str(err)))
    except ConfigError as err:  # the source's facts do not fit the config (a patch size that does not divide it)
        conn.send(("config", (str(err), err.errors)))
    except MemoryError:
        conn.send(("memory", ""))
    except Exception:  # a reader's bug: the request fails; the traceback goes to the service log, not the caller
        conn.send(("crash", traceback.format_exc(limit=-3)))
    finally:
        conn.close()


def with_field(message: str, sources: list[tuple[str, str]]) -> str:
    """A reader's message (which names the file) prefixed with the config field of the source it is about."""
    if any(message.startswith(f"{field}") for field, _ in sources):
        return message
    field = next((field for field, uri in sources if uri in message), sources[0][0])
    return f"{field}: {message}"


class Resolver:
    """`resolver(config)`: the config with its data facts filled in; DataError naming the field and the reason,
    ConfigError when the data's facts do not fit the config, or ResolverBusy. `roots`: the folders and s3://
    prefixes callers may read; None: unconfined (an explicit opt-in)."""

    def __init__(
        self,
        roots: tuple[str, ...] | None,
        *,
        memory_mb: int = MEMORY_MB,
        timeout_s: float = TIMEOUT_S,
        max_concurrent: int = MAX_CONCURRENT,
        latent_cache: str | None = None,
    ):
        self.roots, self.memory_mb, self.timeout_s = roots, memory_mb, timeout_s
        self.latent_cache = latent_cache
        # The forkserver inherits this environment when it starts: Arrow there allocates from malloc, because its
        # default (mimalloc) reserves a GiB of address space at the first allocation, all of the children's limit.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def __call__(self, config: Config) -> Config:
        sources = task_sources(config)
        if not sources:
            return resolve_data(config)
        if self.roots is not None:
            config = confine_sources(config, sources, self.roots)  # refused here, before any child starts
        if not self._slots.acquire(timeout=self.timeout_s):
            raise ResolverBusy(f"{MAX_CONCURRENT} data sources are being read; retry later")
        try:
            return parse_config(self._resolve_in_child(config, task_sources(config)))
        finally:
            self._slots.release()

    def _resolve_in_child(self, config: Config, sources: list[tuple[str, str]]) -> dict:
        field = sources[0][0]
        receive, send = self._context.Pipe(duplex=False)
        args = (send, config.model_dump(), self.roots, self.memory_mb << 20, self.latent_cache)
        child = self._context.Process(target=_child, args=args, daemon=True)
        child.start()
        send.close()
        try:
            if not receive.poll(self.timeout_s):
                raise DataError(f"{field}: reading the source took longer than {self.timeout_s:g} s")
            kind, payload = receive.recv()
        except EOFError:  # the child died without a word (a native allocation that aborted it, a kill)
            kind, payload = "memory", ""
        finally:
            receive.close()
            child.kill()
            child.join(5)
        if kind == "ok":
            return payload
        if kind == "memory":
            raise DataError(f"{field}: reading the source needs more than the {self.memory_mb} MB allowed")
        if kind == "config":
            raise ConfigError(*payload)
        if kind == "crash":
            log.error("resolving %s failed:\n%s", field, payload)
            raise DataError(f"{field}: the source could not be read (an unexpected error, logged by the service)")
        raise DataError(with_field(payload, sources))

    def warm(self) -> None:
        """Start the forkserver now (it imports the data modules: seconds), not at the first submit."""
        forkserver.ensure_running()
