"""Compose services as separate hosts on one machine: a network namespace each (a veth pair on a private bridge,
addresses only inside these namespaces) and a mount namespace each with a private /tmp, the compose volumes as
bind mounts and the service names in a private /etc/hosts. What a service runs and with which environment comes
from `docker compose config` of the committed file, so the rehearsal and the file cannot drift.

Needs root, iproute2 (`ip netns`) and util-linux (`unshare`); `missing_prerequisites()` says what is absent.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

STAGE = "/mnt"  # where each host sees the rehearsal's work folder (a private bind mount)
PROGRAMS = ("ip", "unshare", "mount")  # what building the hosts runs (`make system-deps` checks for each)


def missing_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    for tool in PROGRAMS:
        if shutil.which(tool) is None:
            return f"needs `{tool}` on PATH (`make system-deps` installs it)"
    probe = f"dbprobe{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "`ip netns add` is not permitted here"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def compose_config(compose_bin: str, files: list[Path], env: dict[str, str]) -> dict:
    """The fully resolved compose model (variables substituted, volumes and ports normalised)."""
    args = [compose_bin, *(a for f in files for a in ("-f", str(f))), "config", "--format", "json"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=files[0].parent)
    return json.loads(out.stdout)


@dataclass
class Host:
    name: str  # the compose service name (and its hostname); replicas get -1, -2, ...
    netns: str
    address: str
    procs: list[subprocess.Popen] = field(default_factory=list)


class Network:
    """A private bridge with one namespace per host; `close()` kills every process in them and removes all.

    `keep`: folders every host sees at their own path although they lie under the private /tmp (the checkout with
    its .venv, which a stand-in image puts on PATH, when it is cloned under /tmp)."""

    def __init__(self, workdir: Path, keep: tuple[Path, ...] = ()):
        tag = secrets.token_hex(2)
        self.tag = tag
        self.bridge = f"dbbr{tag}"
        self.subnet = f"10.{100 + int(tag[:2], 16) % 100}.{int(tag[2:], 16)}"
        self.workdir = workdir
        self.hosts: dict[str, Host] = {}
        self.hosts_file = workdir / "etc-hosts"
        self.volumes = workdir / "volumes"
        self.keep = [path.resolve() for path in keep if path.resolve().is_relative_to("/tmp")]
        for index in range(len(self.keep)):
            (workdir / "keep" / str(index)).mkdir(parents=True, exist_ok=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 2
        netns, veth = f"db{self.tag}-{index}", f"dbv{self.tag}{index}"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        address = f"{self.subnet}.{index}"
        for args in (
            ("addr", "add", f"{address}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("link", "set", "lo", "up"),
            ("route", "add", "default", "via", self.gateway),
        ):
            _ip("-n", netns, *args)
        host = Host(name, netns, address)
        self.hosts[name] = host
        self._write_hosts_file()
        return host

    def _write_hosts_file(self) -> None:
        lines = ["127.0.0.1 localhost"]
        for host in self.hosts.values():
            lines.append(f"{host.address} {host.name}")
            base = host.name.rsplit("-", 1)[0]
            if host.name.rsplit("-", 1)[-1].isdigit() and base not in self.hosts:
                lines.append(f"{host.address} {base}")  # replicas answer to the service name too
        self.hosts_file.write_text("\n".join(lines) + "\n")

    def run(
        self,
        host: Host,
        command: list[str],
        *,
        env: dict[str, str],
        volumes: list[dict],
        cwd: str | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen:
        """Start `command` as a process of `host`: its network namespace, new mount and UTS namespaces (a private
        /tmp, this network's /etc/hosts, the service's volumes, the host's name as hostname)."""
        # The work folder may itself lie under /tmp: it is reached through STAGE once /tmp is the private tmpfs.
        # Kept folders are bound under STAGE before the tmpfs hides them, then back at their own path.
        kept = [(shlex.quote(str(path)), f"{STAGE}/keep/{index}") for index, path in enumerate(self.keep)]
        mounts = [
            f"echo {shlex.quote(host.name)} > /proc/sys/kernel/hostname",  # a UTS namespace of its own
            "mount --make-rprivate /",
            f"mount --bind {shlex.quote(str(self.workdir))} {STAGE}",
            *(f"mount --bind {path} {staged}" for path, staged in kept),
            "mount -t tmpfs tmpfs /tmp",
            *(f"mkdir -p {path} && mount --bind {staged} {path}" for path, staged in kept),
            f"mount --bind {STAGE}/{self.hosts_file.name} /etc/hosts",
        ]
        sources = [(volume, self._volume_source(volume)) for volume in volumes]
        # files into a place that does not exist here: a private tmpfs at their folder, made before any bind
        missing = {
            os.path.dirname(v["target"]) for v, src in sources if not src.is_dir() and not os.path.exists(v["target"])
        }
        mounts += [f"mount -t tmpfs tmpfs {shlex.quote(folder)}" for folder in sorted(missing)]
        for volume, source in sources:
            target = shlex.quote(volume["target"])
            mounts.append(f"mkdir -p {target}" if source.is_dir() else f"touch {target}")
            mounts.append(f"mount --bind {shlex.quote(self.staged(source))} {target}")
            if volume.get("read_only"):
                mounts.append(f"mount -o remount,bind,ro {target}")
        if cwd:
            mounts.append(f"mkdir -p {shlex.quote(cwd)} && cd {shlex.quote(cwd)}")
        script = " && ".join(mounts) + " && exec " + shlex.join(command)
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "sh", "-c", script],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        host.procs.append(proc)
        return proc

    def exec(
        self, host: Host, command: list[str], *, env: dict[str, str], timeout_s: float = 30
    ) -> subprocess.CompletedProcess:
        """A one-off command in the host's network namespace (a healthcheck)."""
        return subprocess.run(
            ["ip", "netns", "exec", host.netns, *command], env=env, capture_output=True, text=True, timeout=timeout_s
        )

    def staged(self, path: Path) -> str:
        """Where `path` is seen inside a host (paths under the work folder move to STAGE)."""
        try:
            return f"{STAGE}/{path.relative_to(self.workdir)}"
        except ValueError:
            return str(path)

    def _volume_source(self, volume: dict) -> Path:
        if volume["type"] == "bind":
            return Path(volume["source"])
        path = self.volumes / volume["source"]
        path.mkdir(parents=True, exist_ok=True)
        return path

    def kill_host(self, host: Host) -> None:
        """Every process in the host's network namespace (what `docker kill` does to a container)."""
        for _ in range(3):
            pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            time.sleep(0.5)

    def close(self) -> None:
        for host in self.hosts.values():
            self.kill_host(host)
            for proc in host.procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)
