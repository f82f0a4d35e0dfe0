"""The compose stack rehearsed as separate hosts: every service of docker-compose.yml in its own network and mount
namespace (private /tmp, its volumes, service names resolved through a private /etc/hosts), running the command
and environment that `docker compose config` resolves from the committed file. A tiny run submitted to the
coordinator's published API trains on the ray-worker hosts, assembles, and Prometheus scrapes the coordinator and
the Ray nodes. The same coordinator without its Ray node (`--ray-node` removed) never becomes ready.

What differs from `docker compose up`, and why: images are this checkout's .venv (plus Debian's redis-server and
prometheus) instead of built images; grafana is not started (no binary here; its dashboards are checked in
tests/test_observability.py); two test-only settings shorten waits (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S,
DBLOCKS_POLL_S). Needs root and `ip netns`: elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, TINY
from tests.hosts import STAGE, Network, compose_config, missing_prerequisites
from tests.test_observability import compose_binary, dashboard_metrics

BIN = REPO / ".venv" / "bin"
SECRETS = {
    "REDIS_PASSWORD": "rehearsal-redis-0123456789",
    "DBLOCKS_API_TOKEN": "rehearsal-token-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "rehearsal-grafana",
    "RAY_AUTH_TOKEN": "rehearsal-ray-token-0123456789abcdef",
}
TEST_ONLY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "DBLOCKS_POLL_S": "0.3"}
NUM_RAY_WORKERS = 2
# The entrypoints of the third-party images (compose's `command` is their argument list).
IMAGE_ENTRYPOINTS = {"prom/prometheus": ["prometheus"]}
# The hosts started, in the compose file's services (grafana is not: no binary here, see the module docstring).
SERVICES = ("redis", "ray-head", "ray-worker", "coordinator", "prometheus")
# A health check's HTTP client that this machine may lack: the rehearsal sends the same GET from Python instead.
HTTP_CLIENTS = ("wget", "curl")

pytestmark = pytest.mark.slow


def image_env() -> dict[str, str]:
    """What the image provides: its ENV lines, and the programs on PATH (here: .venv, and Debian's redis-server and
    prometheus, which `make system-deps` installs)."""
    env = {
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PATH": os.pathsep.join(
            [
                str(BIN),
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
        ),
    }
    for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in line[4:].split())
    return env


def healthy(net: Network, host, service: dict, env: dict[str, str]) -> bool:
    test = service.get("healthcheck", {}).get("test")
    if not test:
        return True
    test = [arg.replace("$$", "$") for arg in test]  # compose's escape, undone when it creates the container
    command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    if command[0] in HTTP_CLIENTS and shutil.which(command[0], path=env["PATH"]) is None:
        # the third-party image has the HTTP client; this machine may not: the same GET, from Python
        url = next(arg for arg in command if arg.startswith("http"))
        command = [str(BIN / "python"), "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=10)"]
    try:
        return net.exec(host, command, env=env, timeout_s=20).returncode == 0
    except Exception:
        return False


def wait_until(predicate, timeout_s: float, what: str, on_timeout=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{on_timeout()}")
        time.sleep(1)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = missing_prerequisites()
    if reason:
        pytest.skip(f"namespace rehearsal of the compose stack: {reason}")
    workdir = tmp_path_factory.mktemp("compose-hosts")
    model = compose_config(compose_binary(), [REPO / "docker-compose.yml"], {**os.environ, **SECRETS})
    services = model["services"]
    Path("/data").mkdir(exist_ok=True)  # mount point of the `runs` volume (bind-mounted in each namespace only)
    net = Network(workdir, keep=(REPO,))
    started = {}
    try:
        workers = [f"ray-worker-{i + 1}" for i in range(NUM_RAY_WORKERS)]
        names = [n for s in SERVICES for n in (workers if s == "ray-worker" else [s])]
        service_of = {n: services[n.rsplit("-", 1)[0] if n.startswith("ray-worker") else n] for n in names}
        while len(started) < len(names):  # as compose does: everything whose dependencies are healthy, at once
            wave = [n for n in names if n not in started and set(service_of[n].get("depends_on", {})) <= set(started)]
            assert wave, f"depends_on cannot be met: {sorted(set(names) - set(started))}"
            procs = {}
            for name in wave:
                service = service_of[name]
                host = net.add_host(name)
                env = {**image_env(), **service.get("environment", {}), **TEST_ONLY_ENV}
                log = workdir / f"{name}.log"
                entrypoint = IMAGE_ENTRYPOINTS.get(service.get("image", "").split(":")[0], [])
                proc = net.run(
                    host,
                    [arg.replace("$$", "$") for arg in [*entrypoint, *service["command"]]],  # compose's escape, undone
                    env=env,
                    volumes=service.get("volumes", []),
                    cwd=service.get("working_dir") or ("/data" if name == "redis" else f"{STAGE}/{name}"),
                    log=log,
                )
                procs[name] = (proc, host, service, env, log)
            for name, (proc, host, service, env, log) in procs.items():
                wait_until(
                    lambda: healthy(net, host, service, env) or proc.poll() is not None,
                    180,
                    f"{name} to be healthy",
                    lambda: tail(log),
                )
                assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{tail(log)}"
                started[name] = (host, service, env, log)
        yield net, started, workdir
    finally:
        net.close()


def api_client(host) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{host.address}:8000",
        headers={"Authorization": f"Bearer {SECRETS['DBLOCKS_API_TOKEN']}"},
        timeout=20,
    )


def test_a_run_submitted_to_the_published_api_trains_on_the_worker_hosts(stack):
    net, started, workdir = stack
    coordinator, _, _, coordinator_log = started["coordinator"]
    api = api_client(coordinator)
    config = yaml.safe_load(TINY.read_text())
    # long enough (~5 s a block) that the workers export their gauges while training, on a busy machine too
    config["train"].update({"steps_per_block": 200, "log_every_steps": 10})
    response = api.post("/v1/runs", json=config)
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]

    def finished() -> bool:
        return api.get(f"/v1/runs/{run_id}").json()["state"] in ("SUCCEEDED", "FAILED", "CANCELLED")

    wait_until(finished, 420, "the run to finish", lambda: tail(coordinator_log))
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["state"] == "SUCCEEDED", (run, tail(coordinator_log))
    worker_hostnames = {f"ray-worker-{i + 1}" for i in range(NUM_RAY_WORKERS)}
    for block in run["blocks"]:  # a block's node is "<hostname>/<node id>"; each host has its own hostname
        assert block["node"].split("/")[0] in worker_hostnames, block
    assert api.get(f"/v1/runs/{run_id}/samples.png").content.startswith(b"\x89PNG")

    prometheus, _, _, _ = started["prometheus"]
    prom = httpx.Client(base_url=f"http://{prometheus.address}:9090", timeout=10)

    def query(expr: str) -> list:
        try:
            return prom.get("/api/v1/query", params={"query": expr}).json()["data"]["result"]
        except (httpx.TransportError, KeyError, ValueError):
            return []

    wait_until(
        lambda: any(float(r["value"][1]) >= 1 for r in query('dblocks_runs{state="SUCCEEDED"}')),
        90,
        "Prometheus to scrape the coordinator",
    )
    wait_until(
        lambda: (
            {r["metric"].get("instance", "").split(":")[0] for r in query("ray_node_cpu_count")}
            >= {net.hosts[h].address for h in worker_hostnames}
        ),
        90,
        "Prometheus to scrape every worker node",
        lambda: f"seen: {query('ray_node_cpu_count')}\ntargets: {prom.get('/api/v1/targets').text[:6000]}",
    )
    wait_until(lambda: query("ray_dblocks_worker_step"), 90, "Prometheus to scrape the block workers' metrics")

    # Every metric a Grafana panel queries is exported: declared by the coordinator (a family with no running
    # block has no series yet) or scraped by Prometheus from the Ray nodes.
    names = set(prom.get("/api/v1/label/__name__/values").json()["data"])
    declared = httpx.get(f"http://{coordinator.address}:9090/metrics", timeout=10).text
    names |= set(re.findall(r"^# TYPE (\S+) ", declared, flags=re.M))
    exported = names | {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in names}
    missing = {m for m in dashboard_metrics() if m not in exported and re.sub(r"_total$", "", m) not in exported}
    assert not missing, f"dashboard panels query metrics nobody exports: {missing}"


def test_without_its_ray_node_the_coordinator_never_becomes_ready(stack):
    net, started, workdir = stack
    _, service, env, _ = started["coordinator"]
    command = [arg for arg in service["command"] if arg != "--ray-node"]
    assert command != service["command"], "the compose coordinator no longer passes --ray-node"
    host = net.add_host("coordinator-without-node")
    log = workdir / "coordinator-without-node.log"
    proc = net.run(host, command, env=env, volumes=service.get("volumes", []), cwd=f"{STAGE}/noray", log=log)
    api = api_client(host)

    def ready() -> bool:
        try:
            return api.get("/readyz", timeout=3).status_code == 200
        except httpx.TransportError:
            return False

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        assert not ready(), "a coordinator with no Ray node on its host became ready"
        time.sleep(2)
    net.kill_host(host)
    text = tail(log, 20000)
    assert proc.poll() is not None
    assert "raylet" in text or "Failed to connect" in text or proc.returncode != 0, text[-2000:]
