"""Schemathesis (a pinned dev dependency) against a real `dblocks serve`: real Redis, a real Ray cluster, runs
accepted but held queued by DBLOCKS_MAX_IN_FLIGHT=0 (nothing trains), data sources confined to an empty
folder. Its coverage, fuzzing and stateful phases, every check on (response schemas, undocumented statuses, the
Allow header, auth, ...), bounded in examples; zero failures. The contract exceptions a JSON Schema cannot state
are in tests/schemathesis.toml. Then `dblocks bench api`'s load phase runs a few seconds against the same service."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SERVICE_TOKEN, free_port

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_contract_failure(redis_url, shared_ray, tmp_path):
    port, metrics_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RAY_ADDRESS": shared_ray,
        "DBLOCKS_API_TOKEN": SERVICE_TOKEN,
        "DBLOCKS_MAX_IN_FLIGHT": "0",
        "DBLOCKS_STORAGE": str(tmp_path / "runs"),
        "DBLOCKS_DATA_ROOTS": str(tmp_path / "data"),
        "DBLOCKS_METRICS_PORT": str(metrics_port),
        "DBLOCKS_KEY_PREFIX": "t-fuzz",
        "RAY_AUTH_MODE": "disabled",
    }
    log = tmp_path / "service.log"  # a file, not a pipe: nobody reads a pipe while st runs, and a full one blocks
    service = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert service.poll() is None, log.read_text()[-3000:]
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
                f"Authorization: Bearer {SERVICE_TOKEN}",
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
        assert result.returncode == 0, summary + "\nservice log:\n" + log.read_text()[-3000:]
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        operations = sum(len(methods) for methods in paths.values())
        assert f"Tested: {operations}" in summary  # every operation of the schema was exercised
        for phase in ("Coverage", "Fuzzing", "Stateful"):
            assert f"✅ {phase}" in summary, summary
        load_the_same_service(url, tmp_path, metrics_port)
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)


def load_the_same_service(url, tmp_path, metrics_port):
    """`dblocks bench api`'s load phase for a few seconds against the same service (a run with untrained blocks
    written into its directory gives the samplers a model): every route answers, nothing fails beyond the deliberate
    429s, and the tick time is read from the service's /metrics before and during the load."""
    import yaml

    from benchmarks.api import ROUTE_OF, load_test
    from tests.conftest import TINY
    from tests.test_checkpoint import write_run

    tiny = yaml.safe_load(TINY.read_text())
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=30)
    run_id = http.post("/v1/runs", json=tiny).json()["id"]
    write_run(Path(http.get(f"/v1/runs/{run_id}").json()["run_dir"]))
    result = load_test(
        url,
        token=SERVICE_TOKEN,
        run_id=run_id,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        duration_s=3,
        clients=4,
        submit_every_s=1.0,
        idle_s=1,
        submit_config=tiny,
        log=lambda _: None,
    )
    assert set(result["routes"]) == set(ROUTE_OF.values())
    assert result["errors"] == 0, result["routes"]
    for route in result["routes"].values():
        assert route["requests"] >= 1 and 0 < route["p50_ms"] <= route["p99_ms"] <= route["max_ms"]
    assert result["routes"]["GET /v1/runs/{run_id}/samples.png"]["statuses"].get("200", 0) >= 1
    assert result["tick_before_load"]["ticks"] >= 1 and result["tick_during_load"]["mean_ms"] > 0
