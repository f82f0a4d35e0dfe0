"""No request can stall the service: every config field is finite and bounded, any accepted config plans without
overflow, malformed run ids are 404 without touching Redis, Idempotency-Key gives the same run, and one run's
internal failure stays its own while the loop goes on (real Redis; a dispatcher behind the project's seam)."""

import copy
import math
from urllib.parse import quote

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.api import create_app
from coordinator.reconcile import NOTHING, Resources
from coordinator.records import State
from coordinator.runs import block_demand, create_run
from coordinator.service import Coordinator
from coordinator.store import Store
from shared.config import ConfigError, load_config, parse_config
from shared.plan import plan_json
from tests.conftest import LOCAL, TINY, error_text
from tests.test_bad_input import FIELDS

BASE = yaml.safe_load(TINY.read_text())
NUMERIC = [(s, n, f) for s, n, f in FIELDS if f.annotation in (int, float, "int", "float", int | None, float | None)]
EXTREMES = [float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 2**64, -(2**64)]


def with_value(section, name, value):
    config = copy.deepcopy(BASE)
    config.setdefault(section, {})
    config[section] = dict(config[section]) | {name: value}
    return config


def test_every_numeric_field_has_an_upper_bound():
    unbounded = [
        f"{s}.{n}"
        for s, n, f in NUMERIC
        if not any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in f.metadata)
    ]
    assert NUMERIC and not unbounded, unbounded


@pytest.mark.parametrize("section,name", [(s, n) for s, n, _ in NUMERIC if s is not None])
def test_extremes_of_every_numeric_field_are_refused_naming_it(section, name):
    for value in EXTREMES:
        with pytest.raises(ConfigError) as err:
            parse_config(with_value(section, name, value))
        assert f"{section}.{name}" in str(err.value), (value, str(err.value))


def test_the_review_s_stalling_inputs_are_refused():
    for section, name, value in [
        ("resources", "memory_gb_per_block", 1e300),
        ("sample", "seed", 2**64),
        ("resources", "cpus_per_block", float("nan")),
        ("noise", "p_std", float("nan")),
        ("train", "ema_halflife_steps", float("inf")),
        ("noise", "p_mean", 1000),
        ("sample", "num_per_class", 1_000_000),
        ("blocks", "num_blocks", 5000),
        ("model", "num_layers", 10**9),
        ("train", "batch_size", 10**9),
        ("train", "steps_per_block", 10**12),
        ("model", "hidden_size", 2**40),
    ]:
        with pytest.raises(ConfigError, match=rf"{section}\.{name}"):
            parse_config(with_value(section, name, value))


def in_bounds(f):
    lo = next((getattr(m, a) for m in f.metadata for a in ("ge", "gt") if getattr(m, a, None) is not None), 0)
    hi = next((getattr(m, a) for m in f.metadata for a in ("le", "lt") if getattr(m, a, None) is not None), None)
    return lo, hi


@st.composite
def accepted_extreme(draw):
    """A config with one numeric field at (or next to) either end of its range."""
    section, name, f = draw(st.sampled_from([x for x in NUMERIC if x[0] is not None]))
    lo, hi = in_bounds(f)
    value = draw(st.sampled_from([lo, hi]))
    if isinstance(lo, float) or f.annotation in (float, float | None):
        value = float(value) + (1e-9 if value == lo else -1e-9) * max(1.0, abs(value))
    return section, name, value


@settings(max_examples=300, deadline=None)
@given(case=accepted_extreme())
def test_any_accepted_config_plans_with_finite_numbers(case):
    section, name, value = case
    try:
        config = parse_config(with_value(section, name, value))
    except ConfigError:
        return  # refused by a cross-field rule (e.g. heads must divide the width): refusing is allowed
    plan = plan_json(config)
    boundaries = plan["boundaries"]
    assert all(math.isfinite(b) for b in boundaries) and boundaries == sorted(boundaries)
    assert len(set(boundaries)) == len(boundaries), boundaries
    for index in range(config.planned_blocks):
        demand = block_demand(config, index)
        assert all(math.isfinite(x) and x < 2**63 for x in (demand.cpu, demand.gpu, demand.memory))


def client_for(redis_client, tmp_path, prefix="t-bounds"):
    app = create_app(store=Store(redis_client, prefix=prefix), runs_dir=tmp_path, api_token=None, ready=lambda: {})
    return TestClient(app, base_url=LOCAL)


def test_api_refuses_the_stalling_body_naming_the_field_and_writes_nothing(redis_client, tmp_path):
    client = client_for(redis_client, tmp_path)
    response = client.post("/v1/runs", json=with_value("resources", "memory_gb_per_block", 1e300))
    assert response.status_code == 422 and "resources.memory_gb_per_block" in error_text(response)
    assert not redis_client.keys("t-bounds*") and not list(tmp_path.iterdir())


@pytest.mark.parametrize("run_id", ["x:block:0", "a b", "..", "x" * 300, "-lead", "r%0A"])
def test_malformed_run_ids_are_404_on_every_run_route(redis_client, tmp_path, run_id):
    client = client_for(redis_client, tmp_path)
    for method, path in [
        ("get", ""),
        ("get", "/events"),
        ("post", "/cancel"),
        ("get", "/samples.png"),
        ("get", "/previews"),
        ("post", "/blocks/0/retrain"),
    ]:
        response = getattr(client, method)(f"/v1/runs/{run_id}{path}")
        assert response.status_code == 404, (run_id, path, response.status_code)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run_id=st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t and t not in (".", "..")))
def test_any_run_id_is_404_or_a_run_never_500(run_id, redis_client, tmp_path):
    response = client_for(redis_client, tmp_path).get(f"/v1/runs/{quote(run_id, safe='')}")
    assert response.status_code == 404, (run_id, response.status_code)


def test_idempotency_key_gives_the_same_run_once(redis_client, tmp_path):
    client = client_for(redis_client, tmp_path, prefix="t-idem")
    first = client.post("/v1/runs", json=BASE, headers={"Idempotency-Key": "submit-42"})
    again = client.post("/v1/runs", json=BASE, headers={"Idempotency-Key": "submit-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert len(Store(redis_client, prefix="t-idem").list_runs()) == 1
    other = client.post("/v1/runs", json=with_value("train", "seed", 7), headers={"Idempotency-Key": "submit-42"})
    assert other.status_code == 409 and first.json()["id"] in error_text(other)
    plain = client.post("/v1/runs", json=BASE)  # without a key, every POST is a new run
    assert plain.status_code == 201 and plain.json()["id"] != first.json()["id"]
    bad = client.post("/v1/runs", json=BASE, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422
    for key in redis_client.scan_iter(match="t-idem*"):
        redis_client.delete(key)


class SimulatedCluster:
    """The dispatcher seam the coordinator uses, over a pretend cluster of 4 CPUs: submitted jobs are recorded,
    never run."""

    def __init__(self):
        self.submitted: list[tuple[str, int]] = []

    def capacity(self) -> Resources:
        return Resources(cpu=4.0)

    def held(self) -> Resources:
        return NOTHING

    def num_in_flight(self) -> int:
        return len(self.submitted)

    def in_flight(self, run_id: str) -> set[int]:
        return {i for r, i in self.submitted if r == run_id}

    def submit(self, job, storage_uri, demand, previews=True, *, attempt=1) -> str:
        self.submitted.append((job.run_id, job.block.index))
        return job.name

    def attach(self, job, demand, *, attempt) -> bool:
        return False

    def wait(self, timeout_s: float) -> list:
        return []

    def cancel(self, run_id: str) -> None:
        self.submitted = [(r, i) for r, i in self.submitted if r != run_id]


def test_one_runs_internal_failure_stays_its_own(redis_client, tmp_path):
    store = Store(redis_client, prefix="t-isolate")
    config = load_config(TINY)
    create_run(config, store=store, run_id="bad", run_dir=tmp_path / "bad")
    create_run(config, store=store, run_id="good", run_dir=tmp_path / "good")
    redis_client.hset(store.run_key("bad"), "config_yaml", '"model: {num_layers: -1}"')  # corrupt record
    cluster = SimulatedCluster()
    coordinator = Coordinator(store=store, dispatcher=cluster, log=lambda m: None, poll_s=0.01)
    coordinator.tick()
    bad, good = store.get_run("bad"), store.get_run("good")
    assert bad.state == State.FAILED and "internal error while loading the run" in bad.error
    assert "model.num_layers" in bad.error
    assert good.state == State.RUNNING and cluster.in_flight("good") == {0, 1}
    coordinator.tick()  # the loop goes on; the failed run is not retried
    assert coordinator.healthy(max_age_s=10) and "bad" not in coordinator.reconcilers
    for key in redis_client.scan_iter(match="t-isolate*"):
        redis_client.delete(key)
