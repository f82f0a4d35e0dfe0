"""Work on assembled models runs in worker processes of its own (coordinator/model_work.py): at a lower CPU
priority than the service, and a worker that dies costs its own request a 503, not the service or the next
request."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
import yaml
from fastapi.testclient import TestClient

from coordinator.api import create_app
from coordinator.model_work import NICENESS, ModelWork
from coordinator.store import Store
from tests.conftest import SERVICE_TOKEN, TINY
from tests.test_checkpoint import write_run

PARAMS = {"num_per_class": 1, "steps": 2, "seed": 3}


@pytest.fixture
def client_and_work(redis_client, tmp_path):
    app = create_app(
        store=Store(redis_client, prefix="t-work"), runs_dir=tmp_path, api_token=SERVICE_TOKEN, ready=lambda: {}
    )
    work = ModelWork(slots=2)  # this test's own workers, so killing them touches no other test's
    app.state.context.model_work = work
    client = TestClient(app, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    run_id = client.post("/v1/runs", json=yaml.safe_load(TINY.read_text())).json()["id"]
    write_run(tmp_path / run_id)
    yield client, work, run_id
    work.shutdown()


def test_sampling_runs_in_lower_priority_worker_processes(client_and_work):
    client, work, run_id = client_and_work
    assert work.pids() == []  # started by the first request that needs one
    response = client.get(f"/v1/runs/{run_id}/samples.png", params=PARAMS)
    assert response.status_code == 200, response.text
    workers = work.pids()
    assert 1 <= len(workers) <= 2 and os.getpid() not in workers
    for pid in workers:
        assert psutil.Process(pid).ppid() == os.getpid()
        assert psutil.Process(pid).nice() >= min(19, os.nice(0) + NICENESS)
    again = client.get(f"/v1/runs/{run_id}/samples.png", params=PARAMS)
    assert again.content == response.content  # seeded, whichever worker drew it
    assert work.pids() == workers  # the same workers, kept between requests


def test_a_dead_worker_costs_its_request_a_503_and_the_next_is_served(client_and_work):
    client, work, run_id = client_and_work
    assert client.get(f"/v1/runs/{run_id}/samples.png", params=PARAMS).status_code == 200
    workers = [psutil.Process(pid) for pid in work.pids()]
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    psutil.wait_procs(workers, timeout=30)
    lost = client.get(f"/v1/runs/{run_id}/samples.png", params=PARAMS)
    assert lost.status_code == 503 and lost.headers["retry-after"] == "5", lost.text
    assert "died" in lost.json()["detail"][0]["msg"]
    assert client.get("/healthz").status_code == 200
    assert client.get(f"/v1/runs/{run_id}/samples.png", params=PARAMS).status_code == 200  # a fresh pool
    assert work.pids() and not {w.pid for w in workers} & set(work.pids())


def test_a_finished_runs_artefacts_are_made_in_a_worker_process(client_and_work, redis_client):
    """What `RunReconciler.finish` hands the workers: the model loaded, verified and sampled there, the files
    written into the run directory."""
    from coordinator.artefacts.finish import artefacts_from_files
    from shared.checkpoint import load_manifest

    client, work, run_id = client_and_work
    run = Store(redis_client, prefix="t-work").get_run(run_id)
    (Path(run.run_dir) / "samples.png").unlink(missing_ok=True)
    blocks = Store(redis_client, prefix="t-work").get_blocks(run_id)
    summary = work.run(
        "image_generation", artefacts_from_files, run.run_dir, run.config_yaml, load_manifest(run.run_dir),
        run.run_dir, run_id, blocks,
    )  # fmt: skip
    assert "samples.png" in summary and (Path(run.run_dir) / "samples.png").stat().st_size > 0
    assert work.pids() and os.getpid() not in work.pids()


def test_shutdown_stops_the_workers_at_once_even_mid_work(client_and_work):
    import threading
    import time

    client, work, run_id = client_and_work
    assert client.get(f"/v1/runs/{run_id}/samples.png", params=PARAMS).status_code == 200
    workers = [psutil.Process(pid) for pid in work.pids()]
    answers = []
    slow = threading.Thread(  # a long draw in flight when the service stops
        target=lambda: answers.append(
            client.get(f"/v1/runs/{run_id}/samples.png", params={**PARAMS, "steps": 1000, "num_per_class": 64})
        )
    )
    slow.start()
    time.sleep(1)
    started = time.monotonic()
    work.shutdown()
    assert time.monotonic() - started < 10
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive and work.pids() == []
    slow.join(30)
    assert answers and answers[0].status_code == 503  # its worker stopped under it: retry later
