"""A Ray node on the coordinator's own host, so that the coordinator can be a Ray driver there.

Ray 2.60: a driver needs a raylet on its own host. `ray.init(address="ray-head:6380")` from a container that runs
no Ray node connects to the GCS and then dies trying to reach the head's raylet socket through its own filesystem
(`raylet_ipc_client.cc: Failed to connect to socket`). Ray Client (`ray://`) is not an option for Ray Train.
So `dblocks serve --ray-node` starts `ray start --address=... --block` with no CPUs, GPUs or memory to offer (no
block trains here), waits until its raylet is up, and lives and dies with the service: when the node exits, the
service stops with a non-zero status (the container restarts both); when the service stops, the node is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


class RayNodeError(RuntimeError):
    """The coordinator's Ray node could not start or has died."""


def ray_start_command(address: str, ray_bin: str) -> list[str]:
    """`ray start` joining `address` as a node that offers nothing to schedule on."""
    return [
        ray_bin,
        "start",
        f"--address={address}",
        "--num-cpus=0",
        "--num-gpus=0",
        "--memory=0",
        "--disable-usage-stats",
        "--block",
    ]


def _ray_binary() -> str:
    beside = Path(sys.executable).with_name("ray")  # the ray of this interpreter's environment
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def _session(temp_dir: Path) -> str | None:
    latest = temp_dir / "session_latest"
    return os.path.realpath(latest) if latest.exists() else None


def _raylet_socket(temp_dir: Path) -> Path:
    return temp_dir / "session_latest" / "sockets" / "raylet"


class RayNode:
    """One supervised `ray start --block` child process; `start()` returns once this host's raylet is up."""

    def __init__(
        self,
        address: str,
        *,
        temp_dir: Path = Path("/tmp/ray"),
        ray_bin: str | None = None,
        start_timeout_s: float = 90.0,
    ):
        self.address = address
        self.temp_dir = temp_dir
        self.command = ray_start_command(address, ray_bin or _ray_binary())
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        stale = _session(self.temp_dir)  # a restarted container keeps its /tmp: wait for a NEW session's raylet
        self._proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout_s
        while _session(self.temp_dir) in (None, stale) or not _raylet_socket(self.temp_dir).exists():
            if self._proc.poll() is not None:
                out = self._proc.stdout.read() if self._proc.stdout else ""
                raise RayNodeError(f"`{' '.join(self.command)}` exited with {self._proc.returncode}:\n{out[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RayNodeError(
                    f"no raylet at {_raylet_socket(self.temp_dir)} after {self.start_timeout_s:.0f} s "
                    f"of `{' '.join(self.command)}`"
                )
            time.sleep(0.2)
        threading.Thread(target=self._drain, name="ray-node-log", daemon=True).start()

    def _drain(self) -> None:
        for _ in self._proc.stdout:  # keep the pipe from filling; Ray's own logs are under temp_dir
            pass

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def watch(self, on_exit: Callable[[int], None]) -> threading.Thread:
        """Call `on_exit(returncode)` from a daemon thread when the node process ends."""

        def wait() -> None:
            on_exit(self._proc.wait())

        thread = threading.Thread(target=wait, name="ray-node-watch", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the node's process group (`ray start --block` stops the node's processes as it exits)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self._proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue
