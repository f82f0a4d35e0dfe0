"""Environment settings are read once and refuse bad values, naming the variable."""

from pathlib import Path

import pytest

from coordinator.settings import Settings


def test_defaults_and_the_in_flight_cap():
    settings = Settings.from_env({})
    assert settings.max_in_flight is None and settings.checkpoint_uri is None and settings.runs_dir.name == "runs"
    assert Settings.from_env({"DBLOCKS_MAX_IN_FLIGHT": "3"}).max_in_flight == 3
    assert Settings.from_env({"DBLOCKS_MAX_IN_FLIGHT": "0"}).max_in_flight == 0  # drain: nothing new starts


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "10000001"])
def test_a_bad_in_flight_cap_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match="DBLOCKS_MAX_IN_FLIGHT"):
        Settings.from_env({"DBLOCKS_MAX_IN_FLIGHT": value})


def test_run_retention_is_days_bounded_and_named_when_wrong():
    assert Settings.from_env({}).run_retention_s is None
    assert Settings.from_env({"DBLOCKS_RUN_RETENTION_DAYS": "0.5"}).run_retention_s == 43200
    for bad in ("0", "-1", "nan", "inf", "a week", "1e9"):
        with pytest.raises(ValueError, match="DBLOCKS_RUN_RETENTION_DAYS"):
            Settings.from_env({"DBLOCKS_RUN_RETENTION_DAYS": bad})


def test_the_latent_cache_is_an_absolute_local_folder():
    assert Settings.from_env({"DBLOCKS_CACHE": "/c"}).latent_cache == Path("/c/latents")
    assert Settings.from_env({"DBLOCKS_LATENT_CACHE": "/shared/latents"}).latent_cache == Path("/shared/latents")
    for raw in ("s3://bucket/latents", "relative/latents"):
        with pytest.raises(ValueError, match=f"DBLOCKS_LATENT_CACHE={raw!r}: expected an absolute local folder"):
            Settings.from_env({"DBLOCKS_LATENT_CACHE": raw})
