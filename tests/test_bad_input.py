"""Property-based: >= 1,000 generated bad configs and request bodies are all rejected with a message naming the
field, and none writes a Redis key or a file (so none can start a job)."""

import copy

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from coordinator.api import create_app
from coordinator.store import Store
from shared.config import Config, ConfigError, parse_config
from tests.conftest import LOCAL, TINY, error_text

BASE = yaml.safe_load(TINY.read_text())


def schema_fields():
    out = []
    for section, field in Config.model_fields.items():
        if isinstance(field.default, BaseModel):
            out += [(section, name, f) for name, f in type(field.default).model_fields.items()]
        else:
            out.append((None, section, field))
    return out


FIELDS = schema_fields()


def lower_bounds(f):
    for meta in f.metadata:
        for attr, delta in (("ge", -1), ("gt", 0)):
            bound = getattr(meta, attr, None)
            if bound is not None:
                yield bound + delta if attr == "ge" else bound - (1 if isinstance(bound, int) else 1e-3) - abs(delta)


def upper_bounds(f):
    for meta in f.metadata:
        for attr in ("le", "lt"):
            bound = getattr(meta, attr, None)
            if bound is not None:
                yield bound + 1


# A value no field of any type accepts: a mapping, or words that parse as no number, bool, name or enum member.
WRONG_TYPE = st.one_of(
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=2),
    st.text(alphabet="qxz", min_size=1, max_size=8).map(lambda t: f"not valid {t}"),
)

# Free-text fields (paths, column names) accept any string here; whether it names real data is checked when the
# data is resolved (tests/test_data.py).
FREE_TEXT = {
    "data.source",
    "data.test_source",
    "data.image_column",
    "data.label_column",
    "text.source",
    "text.text_column",
    "init.checkpoint",  # what it names is checked when the run is resolved (tests/test_pretrained.py)
}

RANGED = [(s, n, v) for s, n, f in FIELDS for v in [*lower_bounds(f), *upper_bounds(f)]]


@st.composite
def bad_config(draw):
    config = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["unknown", "wrong_type", "out_of_range"]))
    if kind == "out_of_range":
        section, name, value = draw(st.sampled_from(RANGED))
    else:
        section, name, _ = draw(st.sampled_from(FIELDS))
        value = draw(WRONG_TYPE) if f"{section}.{name}" not in FREE_TEXT else {"a": 1}
        if kind == "unknown":
            name = f"{name}_{draw(st.text(alphabet='abcxyz', min_size=1, max_size=6))}"
            value = 1
    if section is None:
        config[name] = value
        return config, name
    config.setdefault(section, {})
    config[section] = dict(config[section]) | {name: value}
    return config, f"{section}.{name}"


@settings(max_examples=300, deadline=None)
@given(bad_config())
def test_generated_bad_configs_are_rejected_naming_the_field(case):
    config, field = case
    with pytest.raises(ConfigError) as err:
        parse_config(config)
    assert field in str(err.value)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_config())
def test_generated_bad_request_bodies_are_4xx_and_write_nothing(case, redis_client, tmp_path):
    config, field = case
    client = TestClient(
        create_app(store=Store(redis_client, prefix="t-bad"), runs_dir=tmp_path, api_token=None, ready=lambda: {}),
        base_url=LOCAL,
    )
    response = client.post("/v1/runs", json=config)
    assert response.status_code == 422 and field in error_text(response)
    assert not redis_client.keys("t-bad*") and not list(tmp_path.iterdir())


BAD_RETRAIN = st.one_of(
    st.lists(st.integers(), max_size=3),
    st.integers(),
    st.text(alphabet="qxz", max_size=5),
    st.fixed_dictionaries({"bogus": st.integers()}),
    st.fixed_dictionaries({"steps": st.integers(max_value=0)}),
    st.fixed_dictionaries({"steps": st.text(alphabet="qxz", min_size=1, max_size=4)}),
    st.fixed_dictionaries(
        {"from_scratch": st.one_of(st.lists(st.booleans(), min_size=1), st.just("maybe"), st.none())}
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BAD_RETRAIN)
def test_bad_retrain_bodies_are_422(body, redis_client, tmp_path):
    client = TestClient(
        create_app(store=Store(redis_client, prefix="t-bad"), runs_dir=tmp_path, api_token=None, ready=lambda: {}),
        base_url=LOCAL,
    )
    assert client.post("/v1/runs/r/blocks/0/retrain", json=body).status_code == 422


def test_oversized_bodies_are_413(redis_client, tmp_path):
    client = TestClient(
        create_app(store=Store(redis_client, prefix="t-bad"), runs_dir=tmp_path, api_token=None, ready=lambda: {}),
        base_url=LOCAL,
    )
    response = client.post(
        "/v1/runs", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and not redis_client.keys("t-bad*")


def test_a_chunked_body_is_bounded_too_and_read_whole_when_small(redis_client, tmp_path):
    """Without a Content-Length the edge reads the body itself, up to the limit, and hands the route all of it."""
    client = TestClient(
        create_app(store=Store(redis_client, prefix="t-bad"), runs_dir=tmp_path, api_token=None, ready=lambda: {}),
        base_url=LOCAL,
    )

    def chunks(parts):
        yield from parts

    headers = {"content-type": "application/json"}
    huge = client.post("/v1/runs", content=chunks([b"{"] + [b" " * 65536] * 20 + [b"}"]), headers=headers)
    assert huge.status_code == 413 and not redis_client.keys("t-bad*")
    small = client.post("/v1/runs", content=chunks([b'{"train": ', b'{"lr": -1}}']), headers=headers)
    assert small.status_code == 422 and small.json()["detail"][0]["loc"] == ["body", "train", "lr"], small.text


@pytest.mark.parametrize(
    "field", [(s, n) for s, n, f in FIELDS if f.annotation in (int, float, int | None, float | None)][:40]
)
def test_a_boolean_is_not_a_number(field):
    """Found by Schemathesis: pydantic's lax mode read `false` as 0 for an integer field."""
    section, name = field
    config = copy.deepcopy(BASE)
    if section is None:
        config[name] = False
    else:
        config[section] = dict(config.get(section, {})) | {name: False}
    with pytest.raises(ConfigError, match=f"{name}: expected a number, got a boolean"):
        parse_config(config)
