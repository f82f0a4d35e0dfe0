"""The HTTP API against a real redis-server (no Ray: the API only reads and writes state)."""

import io
import json
import threading
import time

import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from coordinator.api import create_app
from coordinator.cli import app as cli_app
from coordinator.metrics import Metrics
from coordinator.records import State
from coordinator.store import Store
from tests.conftest import LOCAL, SERVICE_TOKEN, TINY, error_text, free_port
from tests.test_checkpoint import write_run

TOKEN = SERVICE_TOKEN


@pytest.fixture
def api(redis_client, tmp_path):
    store = Store(redis_client, prefix="t-api")
    app = create_app(
        store=store, runs_dir=tmp_path, api_token=TOKEN, ready=lambda: {"redis": True, "ray": True}, metrics=Metrics()
    )
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client, store


def tiny_config():
    return yaml.safe_load(TINY.read_text())


def test_auth_is_required_except_for_health(api):
    client, _ = api
    anonymous = TestClient(client.app)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/v1/runs").status_code == 401
    assert anonymous.get("/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/runs").status_code == 200


def test_submit_get_list(api, tmp_path):
    client, store = api
    response = client.post("/v1/runs", json=tiny_config())
    assert response.status_code == 201
    run_id = response.json()["id"]
    run = client.get(f"/v1/runs/{run_id}").json()
    assert run["state"] == "PENDING" and len(run["blocks"]) == 2
    block = run["blocks"][0]
    assert {"index", "state", "step", "attempt", "resumed_from_step", "sigma_lo", "sigma_hi"} <= set(block)
    assert block["sigma_hi"] == 80.0 and block["state"] == "PENDING"
    assert [r["id"] for r in client.get("/v1/runs").json()] == [run_id]
    assert (tmp_path / run_id / "config.yaml").is_file()


def test_bad_config_is_a_422_naming_the_field_and_writes_nothing(api, tmp_path, redis_client):
    client, _ = api
    keys = set(redis_client.keys("t-api*"))
    bad = tiny_config() | {"blocks": {"num_blocks": 0}}
    response = client.post("/v1/runs", json=bad)
    assert response.status_code == 422 and "blocks.num_blocks" in error_text(response)
    assert set(redis_client.keys("t-api*")) == keys and not list(tmp_path.iterdir())


def test_unknown_run_and_block_are_404(api):
    client, _ = api
    assert client.get("/v1/runs/nope").status_code == 404
    run_id = client.post("/v1/runs", json=tiny_config()).json()["id"]
    assert client.post(f"/v1/runs/{run_id}/blocks/7/retrain", json={}).status_code == 404
    assert client.get(f"/v1/runs/{run_id}/samples.png").status_code == 404


def test_cancel_and_retrain_rules(api):
    client, store = api
    run_id = client.post("/v1/runs", json=tiny_config()).json()["id"]
    assert client.post(f"/v1/runs/{run_id}/blocks/0/retrain", json={}).status_code == 409  # still running
    assert client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    assert store.get_run(run_id).cancel_requested
    # Pretend the run finished: retrain one block from scratch -> that block PENDING with a new generation.
    for i in range(2):
        store.transition_block(run_id, i, State.RUNNING)
        store.transition_block(run_id, i, State.SUCCEEDED, step=40)
    store.set_run_state(run_id, State.SUCCEEDED)
    assert client.post(f"/v1/runs/{run_id}/cancel").status_code == 409
    assert (
        client.post(f"/v1/runs/{run_id}/blocks/1/retrain", json={"from_scratch": False, "steps": 10}).status_code == 422
    )  # cannot "train on" to fewer steps than it has
    response = client.post(f"/v1/runs/{run_id}/blocks/1/retrain", json={"from_scratch": True})
    assert response.status_code == 202
    blocks = store.get_blocks(run_id)
    assert (blocks[0].state, blocks[1].state, blocks[1].generation) == (State.SUCCEEDED, State.PENDING, 1)
    assert store.get_run(run_id).state == State.PENDING and not store.get_run(run_id).cancel_requested


def test_readyz_reports_failing_dependencies(redis_client, tmp_path):
    app = create_app(
        store=Store(redis_client, prefix="t-api"),
        runs_dir=tmp_path,
        api_token=None,
        ready=lambda: {"redis": True, "ray": False},
    )
    response = TestClient(app, base_url=LOCAL).get("/readyz")
    assert response.status_code == 503 and response.json()["detail"]["ray"] is False


def test_requests_are_counted_by_route_template_not_by_run_id(redis_client, tmp_path):
    metrics = Metrics()
    app = create_app(
        store=Store(redis_client, prefix="t-api"),
        runs_dir=tmp_path,
        api_token=None,
        ready=lambda: {"redis": True},
        metrics=metrics,
    )
    client = TestClient(app, base_url=LOCAL)
    client.get("/v1/runs/abc")
    client.get("/v1/runs/def")
    value = metrics.registry.get_sample_value(
        "dblocks_api_requests_total", {"method": "GET", "route": "/v1/runs/{run_id}", "status": "404"}
    )
    assert value == 2.0


def test_previews_are_listed_and_served_without_path_escape(api, tmp_path):
    import torch

    from shared.images import save_grid

    client, store = api
    run_id = client.post("/v1/runs", json=tiny_config()).json()["id"]
    previews = tmp_path / run_id / "checkpoints" / "previews"  # where the workers write them (run_storage)
    previews.mkdir(parents=True)
    save_grid(torch.zeros(2, 1, 28, 28), 2, previews / "block_0_step_20.png")
    assert client.get(f"/v1/runs/{run_id}/previews").json() == ["block_0_step_20.png"]
    response = client.get(f"/v1/runs/{run_id}/previews/block_0_step_20.png")
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    assert client.get(f"/v1/runs/{run_id}/previews/..%2Fconfig.yaml").status_code in (404, 422)
    assert client.get(f"/v1/runs/{run_id}/previews/config.yaml").status_code == 422
    assert client.get(f"/v1/runs/{run_id}/previews/block_1_step_20.png").status_code == 404


def test_fresh_samples_are_drawn_on_request_within_bounds(api, tmp_path):
    client, _ = api
    run_id = client.post("/v1/runs", json=tiny_config()).json()["id"]
    assert client.get(f"/v1/runs/{run_id}/samples.png", params={"steps": 4}).status_code == 409  # not assembled
    write_run(tmp_path / run_id)

    params = {"num_per_class": 3, "steps": 4, "seed": 1}
    response = client.get(f"/v1/runs/{run_id}/samples.png", params=params)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (2 * (3 * 30 + 2), 2 * (10 * 30 + 2))  # 3 x 10 classes
    assert client.get(f"/v1/runs/{run_id}/samples.png", params=params).content == response.content  # seeded
    assert client.get(f"/v1/runs/{run_id}/samples.png", params={**params, "seed": 2}).content != response.content
    for bad in (
        {"num_per_class": 0},
        {"num_per_class": 65},
        {"steps": 0},
        {"steps": 1001},
        {"cfg": -1},
        {"weights": "best"},
        {"seed": "x"},
    ):
        response = client.get(f"/v1/runs/{run_id}/samples.png", params=bad)
        assert response.status_code == 422, bad
        assert next(iter(bad)) in response.text


@pytest.fixture
def served(redis_client, tmp_path):
    """The API on a real loopback port (uvicorn in a thread): (url, app, run directory root)."""
    store = Store(redis_client, prefix="t-api-cli")
    app = create_app(store=store, runs_dir=tmp_path, api_token=TOKEN, ready=lambda: {"redis": True})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", app, tmp_path
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cli_samples_a_run_through_the_service(served, tmp_path):
    url, app, runs = served
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    run_id = client.post("/v1/runs", json=tiny_config()).json()["id"]
    write_run(runs / run_id)
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        cli_app,
        ["sample", run_id, "--server", url, "--steps", "4", "--num-per-class", "2", "--out", str(out)],
        env={"DBLOCKS_API_TOKEN": TOKEN},
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 * (2 * 30 + 2), 2 * (10 * 30 + 2))
    result = CliRunner().invoke(
        cli_app,
        ["sample", "no-such-run", "--server", url, "--steps", "4", "--out", str(out)],
        env={"DBLOCKS_API_TOKEN": TOKEN},
    )
    assert result.exit_code == 1 and "404" in result.output


def test_cli_service_commands_go_through_the_typed_client(served, tmp_path):
    """submit, status, cancel, delete, retrain over real HTTP: answers parsed by the schema's models, every error
    shown as `field: message` with exit 1, a bad config refused by the service naming the field."""
    url, _, _ = served
    env = {"DBLOCKS_API_TOKEN": TOKEN}

    def cli(*args):
        return CliRunner().invoke(cli_app, [*args, "--server", url], env=env)

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.read_text())
    submitted = cli("submit", str(config))
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.output.strip()
    status = cli("status", run_id, "--json")
    assert status.exit_code == 0 and json.loads(status.output)["state"] == "PENDING"
    assert cli("delete", run_id).exit_code == 1  # 409: not finished yet
    assert "409" in cli("delete", run_id).output
    assert cli("cancel", run_id).exit_code == 0
    bad = cli("submit", str(config), "--set", "train.lr=-1")
    assert bad.exit_code == 2 and "train.lr" in bad.output  # refused before sending: the same config model
    missing = cli("retrain", "no-such-run", "0")
    assert missing.exit_code == 1 and "404" in missing.output
    unreachable = CliRunner().invoke(cli_app, ["status", run_id, "--server", f"http://127.0.0.1:{free_port()}"])
    assert unreachable.exit_code == 1 and "cannot reach the service" in unreachable.output


def test_typed_client_parses_every_answer_and_raises_the_error_items(api):
    from coordinator.client import ApiError, ServiceClient

    http, _ = api
    client = ServiceClient(http=http)
    created = client.submit(tiny_config(), idempotency_key="k-1")
    assert client.submit(tiny_config(), idempotency_key="k-1").id == created.id
    view = client.run(created.id)
    assert view.state == "PENDING" and len(view.blocks) == 2 and view.blocks[0].sigma_hi == 80.0
    assert [r.id for r in client.runs()] == [created.id]
    assert client.events(created.id)[0]["kind"]
    assert client.previews(created.id) == []
    with pytest.raises(ApiError) as err:
        client.submit(tiny_config() | {"train": {"lr": -1}})
    assert err.value.status == 422 and err.value.items[0].loc[:3] == ["body", "train", "lr"]
    assert "train.lr:" in str(err.value)
    with pytest.raises(ApiError) as err:
        client.run("nope")
    assert err.value.status == 404 and err.value.items[0].type == "not_found"
    assert client.cancel(created.id).cancel_requested
    with pytest.raises(ApiError) as err:
        client.retrain(created.id, 5)
    assert err.value.status == 404


def write_classification_run(run_dir):
    """A finished 2-block classification run directory with untrained (uniform) blocks."""
    from shared.checkpoint import MANIFEST_VERSION, save_block_weights, sha256_file, write_manifest
    from shared.tasks.classification.task import LabelDenoiserNet
    from tests.test_checkpoint import BOUNDS, SPEC

    run_dir.mkdir(parents=True, exist_ok=True)
    blocks = []
    for index in range(2):
        net = LabelDenoiserNet(SPEC)
        block = {"index": index, "sigma_lo": BOUNDS[1 - index], "sigma_hi": BOUNDS[2 - index]}
        path = run_dir / f"block_{index}.safetensors"
        save_block_weights(
            path,
            model=net.state_dict(),
            ema={k: v.clone() for k, v in net.state_dict().items()},
            meta={
                "block": block,
                "net": SPEC.to_dict(),
                "task": "classification",
                "sigma_data": 0.5,
                "config_hash": "h1",
            },
        )
        blocks.append({**block, "file": path.name, "sha256": sha256_file(path)})
    write_manifest(
        run_dir,
        {
            "manifest_version": MANIFEST_VERSION,
            "boundaries": BOUNDS,
            "blocks": blocks,
            "config_hash": "h1",
            "task": "classification",
        },
    )


def test_predict_labels_images_of_a_classification_run_within_bounds(api, tmp_path):
    client, _ = api
    config = {**tiny_config(), "task": "classification"}
    run_id = client.post("/v1/runs", json=config).json()["id"]
    images = [[[[-1.0] * 28] * 28]] * 3
    assert client.post(f"/v1/runs/{run_id}/predict", json={"images": images}).status_code == 409  # not assembled
    write_classification_run(tmp_path / run_id)
    response = client.post(f"/v1/runs/{run_id}/predict", json={"images": images, "seed": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["labels"]) == 3 and all(0 <= label < 10 for label in body["labels"])
    assert all(abs(p - 0.1) < 1e-5 for p in body["probabilities"])  # untrained blocks: uniform
    wrong_shape = client.post(f"/v1/runs/{run_id}/predict", json={"images": [[[[0.0] * 5] * 5]]})
    assert wrong_shape.status_code == 422 and "expected N x 1 x 28 x 28" in wrong_shape.text
    ragged = client.post(f"/v1/runs/{run_id}/predict", json={"images": [[[[0.0, 1.0], [0.5]]]]})  # Schemathesis found
    assert ragged.status_code == 422 and error_text(ragged).startswith("images: ragged")
    too_many = client.post(f"/v1/runs/{run_id}/predict", json={"images": [[[[0.0]]]] * 257})
    assert too_many.status_code == 422
    image_run = client.post("/v1/runs", json=tiny_config()).json()["id"]
    assert client.post(f"/v1/runs/{image_run}/predict", json={"images": images}).status_code == 409
    assert client.get(f"/v1/runs/{run_id}/samples.png", params={"steps": 4}).status_code == 409


def test_the_served_schema_is_the_committed_one_and_types_every_route(api):
    """docs/generated/openapi.json is what the service serves (regenerate: python -m coordinator.api >
    docs/generated/openapi.json), so an API change shows in review; the run config is the body of POST /v1/runs."""
    import json

    from tests.conftest import REPO

    client, _ = api
    served = client.get("/openapi.json").json()
    assert served == json.loads((REPO / "docs" / "generated" / "openapi.json").read_text())
    body = served["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    variants = {
        ref["$ref"].rsplit("/", 1)[1]: served["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
        for ref in body["oneOf"]
    }
    by_task = {v["properties"]["task"]["enum"][0]: set(v["properties"]) for v in variants.values()}
    from shared.tasks import TASKS

    assert set(by_task) == set(TASKS)  # one run config per registered task
    assert all(v["additionalProperties"] is False for v in variants.values())
    shared = {"task", "name", "data", "model", "blocks", "noise", "train", "resources", "sample", "init"}
    for name, cls in TASKS.items():  # each carries its own task's section and no other
        assert by_task[name] == shared | ({cls.section} if cls.section else set()), name
    lr = served["components"]["schemas"]["TrainConfig"]["properties"]["lr"]
    assert lr["exclusiveMinimum"] == 0 and lr["maximum"] == 10 and lr["default"] == 0.001
    for path, operations in served["paths"].items():
        for method, operation in operations.items():
            assert "200" in operation["responses"] or "201" in operation["responses"] or "202" in operation["responses"]
            if path.startswith("/v1/runs/{run_id}"):  # every route on a run can miss it
                assert "404" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)


def test_every_4xx_has_the_one_error_shape(api):
    client, _ = api
    for response, status in [
        (client.get("/v1/runs/nope"), 404),
        (client.get("/v1/nothing-here"), 404),
        (client.delete("/v1/runs"), 405),
        (TestClient(client.app).get("/v1/runs"), 401),
        (client.post("/v1/runs", json={"train": {"lr": -1}}), 422),
        (client.post("/v1/runs", content=b"{not json", headers={"content-type": "application/json"}), 422),
        (client.get("/v1/runs/nope/samples.png", params={"steps": 0}), 422),
        (client.post("/v1/runs", content=b"x" * (2 << 20)), 413),
    ]:
        assert response.status_code == status, (status, response.text)
        assert error_text(response)  # {"detail": [{"loc", "msg", "type"}]}
    assert client.delete("/v1/runs").headers["allow"] == "GET, POST"  # every method of the path, not the first route's
    lr = client.post("/v1/runs", json={"train": {"lr": -1}}).json()["detail"][0]
    assert lr["loc"] == ["body", "train", "lr"] and lr["type"] == "greater_than"


def test_delete_removes_a_finished_runs_records_and_on_request_its_files(api, tmp_path, redis_client):
    client, store = api
    keep = client.post("/v1/runs", json=tiny_config()).json()["id"]
    run_id = client.post("/v1/runs", json=tiny_config() | {"name": "other"}).json()["id"]
    assert client.delete(f"/v1/runs/{run_id}").status_code == 409  # pending: cancel it first
    assert client.delete("/v1/runs/nope").status_code == 404
    for i in range(2):
        store.transition_block(run_id, i, State.CANCELLED)
    store.set_run_state(run_id, State.CANCELLED)
    assert (tmp_path / run_id).is_dir() and redis_client.keys(f"t-api:run:{run_id}*")

    response = client.delete(f"/v1/runs/{run_id}", params={"files": "true"})
    assert response.status_code == 200 and response.json() == {"id": run_id, "deleted": True, "files_deleted": True}
    assert not redis_client.keys(f"t-api:run:{run_id}*") and not (tmp_path / run_id).exists()
    assert client.get(f"/v1/runs/{run_id}").status_code == 404
    assert [r["id"] for r in client.get("/v1/runs").json()] == [keep] and (tmp_path / keep).is_dir()
    assert client.delete(f"/v1/runs/{run_id}").status_code == 404


def test_listing_runs_gives_the_newest_within_a_bounded_limit(api):
    client, _ = api
    ids = [client.post("/v1/runs", json=tiny_config()).json()["id"] for _ in range(3)]
    assert [r["id"] for r in client.get("/v1/runs").json()] == ids
    assert [r["id"] for r in client.get("/v1/runs", params={"limit": 2}).json()] == ids[1:]
    for bad in (0, 10_001, "many"):
        response = client.get("/v1/runs", params={"limit": bad})
        assert response.status_code == 422 and error_text(response)


def test_the_docs_pages_load_nothing_from_outside_the_service(api):
    """/docs and /redoc reference only the service's own assets (an air-gapped cluster has no CDN), and each one
    is served."""
    import re

    client, _ = api
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert urls and all(u.startswith("/") for u in urls), urls
        for url in urls:
            assert client.get(url).status_code == 200, url
    assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text


def test_a_real_browser_renders_every_operation_of_the_docs_page_offline(served):
    """Headless Chromium (Debian's) opens /docs with every host name but loopback unresolvable, as on a cluster
    without internet: Swagger UI loads from the service itself and renders each operation of the schema."""
    import shutil
    import subprocess

    url, app, _ = served
    browser = shutil.which("chromium")
    assert browser, "chromium is installed by `make system-deps`"
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
         "--dump-dom", f"{url}/docs"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for path, methods in app.openapi()["paths"].items():
        assert f'data-path="{path}"' in out.stdout, path  # Swagger UI rendered this operation
        for method in methods:
            assert f"opblock-{method}" in out.stdout, (path, method)
