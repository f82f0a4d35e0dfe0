"""Schemathesis (a pinned dev dependency) against a real `dblocks serve`: real Redis, a real Ray cluster, runs
accepted but held queued by DBLOCKS_MAX_IN_FLIGHT=0 (nothing trains), data sources confined to an empty
folder. Its coverage, fuzzing and stateful phases, every check on (response schemas, undocumented statuses, the
Allow header, auth, ...), bounded in examples; zero failures. The contract exceptions a JSON Schema cannot state
are in tests/schemathesis.toml."""

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_contract_failure(redis_url, shared_ray, tmp_path):
    port = free_port()
    (tmp_path / "data").mkdir()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RAY_ADDRESS": shared_ray,
        "DBLOCKS_API_TOKEN": "t",
        "DBLOCKS_MAX_IN_FLIGHT": "0",
        "DBLOCKS_STORAGE": str(tmp_path / "runs"),
        "DBLOCKS_DATA_ROOTS": str(tmp_path / "data"),
        "DBLOCKS_METRICS_PORT": "0",
        "DBLOCKS_KEY_PREFIX": "t-fuzz",
        "RAY_AUTH_MODE": "disabled",
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert service.poll() is None, service.stdout.read().decode()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(1)
        st = shutil.which("st", path=os.path.dirname(sys.executable))
        result = subprocess.run(
            [
                st,
                "--config-file",
                str(REPO / "tests" / "schemathesis.toml"),
                "--no-color",
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--header",
                "Authorization: Bearer t",
                "--max-examples",
                "12",
                "--seed",
                "7",
                "--generation-database",
                ":memory:",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=400,
        )
        summary = result.stdout[-6000:]
        assert result.returncode == 0, summary
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        operations = sum(len(methods) for methods in paths.values())
        assert f"Tested: {operations}" in summary  # every operation of the schema was exercised
        for phase in ("Coverage", "Fuzzing", "Stateful"):
            assert f"✅ {phase}" in summary, summary
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
