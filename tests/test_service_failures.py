"""The coordinator service survives real failures: real processes killed by PID, real Redis, a real Ray cluster
(`ray start --head` on loopback, as a separate process tree from the coordinator)."""

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import yaml

from tests.conftest import REPO, TINY, free_port

pytestmark = pytest.mark.slow

# Long enough to kill something mid-block; checkpoints every 100 steps bound the redone work.
CONFIG_OVERRIDES = {"train": {"steps_per_block": 2000, "checkpoint_every_steps": 100, "log_every_steps": 20,
                              "max_failures": 2}}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    head = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "status", f"--address={address}"],
                         env=env, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "ray head did not come up"
        time.sleep(1)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    head.wait(timeout=60)


class Service:
    def __init__(self, env, port):
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "serve", "--port", str(port)],
                                     cwd=REPO, env={**env, "DBLOCKS_METRICS_PORT": str(self.metrics_port)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": "Bearer t"}, timeout=10)
        wait_for(lambda: self._ready(), 90, "service ready")

    def _ready(self):
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def run(self, run_id):
        return self.client.get(f"/v1/runs/{run_id}").json()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture
def service_env(redis_url, tmp_path, ray_cluster, request):
    return {**os.environ, "REDIS_URL": redis_url, "RAY_ADDRESS": ray_cluster, "RAY_AUTH_MODE": "disabled",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "DBLOCKS_STORAGE": str(tmp_path / "storage"),
            "DBLOCKS_KEY_PREFIX": f"t-svc-{request.node.name[-12:]}", "DBLOCKS_API_TOKEN": "t",
            "DBLOCKS_LEASE_TTL_S": "3", "DBLOCKS_POLL_S": "0.3", "PYTHONUNBUFFERED": "1"}


def submit(service):
    config = yaml.safe_load(TINY.read_text())
    config["train"].update(CONFIG_OVERRIDES["train"])
    response = service.client.post("/v1/runs", json=config)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def train_worker_pids():
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::RayTrainWorker")]


def test_killed_training_worker_resumes_from_its_checkpoint(service_env):
    service = Service(service_env, free_port())
    try:
        run_id = submit(service)
        wait_for(lambda: all(b["step"] >= 300 for b in service.run(run_id)["blocks"]), 240, "blocks past step 300")
        steps_at_kill = {b["index"]: b["step"] for b in service.run(run_id)["blocks"]}
        pids = train_worker_pids()
        assert len(pids) == 2  # one Train worker per block, both running
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: service.run(run_id)["state"] in ("SUCCEEDED", "FAILED"), 300, "run to finish")
        run = service.run(run_id)
        assert run["state"] == "SUCCEEDED", run
        resumed = [b for b in run["blocks"] if b["resumed_from_step"] > 0]
        assert len(resumed) == 1  # the killed block, and only it
        (block,) = resumed
        assert block["step"] == 2000
        # At most one checkpoint interval (100 steps) plus the progress lag is redone.
        assert block["resumed_from_step"] >= steps_at_kill[block["index"]] - 100 - 40
    finally:
        service.stop()


def test_killed_coordinator_is_replaced_and_runs_resume(service_env):
    first = Service(service_env, free_port())
    run_id = submit(first)
    try:
        wait_for(lambda: all(b["step"] >= 300 for b in first.run(run_id)["blocks"]), 240, "blocks past step 300")
    finally:
        first.kill()
    second = Service(service_env, free_port())
    try:
        wait_for(lambda: second.run(run_id)["state"] in ("SUCCEEDED", "FAILED"), 300, "run to finish")
        run = second.run(run_id)
        assert run["state"] == "SUCCEEDED", run
        for block in run["blocks"]:
            assert block["step"] == 2000 and block["resumed_from_step"] >= 200, block  # not from 0
            assert block["attempt"] == 1  # a coordinator restart is not the block's failure
        events = [e for e in second.client.get(f"/v1/runs/{run_id}/events").json() if e["kind"] == "block_state"]
        assert sum(e["state"] == "RUNNING" for e in events) == 4  # each block launched twice, once per coordinator
    finally:
        second.stop()
