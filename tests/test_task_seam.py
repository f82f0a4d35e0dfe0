"""A new kind of model enters through its own module: a task defined only in this file (its training interface and
its outputs) is registered, then planned, trained block by block locally without Ray, assembled, evaluated by
`dblocks eval`, and served by the API's artefact routes, with no change to any file outside this one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from pydantic import Field
from typer.testing import CliRunner

from coordinator.api import create_app
from coordinator.artefacts.assemble import assemble, block_file
from coordinator.artefacts.finish import write_run_artefacts
from coordinator.cli import app as cli_app
from coordinator.records import BlockRecord, State
from coordinator.runs import create_run
from coordinator.store import Store
from shared.assembly import load_assembled
from shared.checkpoint import sha256_file
from shared.config import ConfigError, parse_config
from shared.config_base import Section
from shared.config_doc import render as render_config_doc
from shared.job import BlockJob
from shared.plan import block_specs, boundaries, plan_json
from shared.tasks import SAMPLES_PNG, TASKS, task_for
from shared.tasks.base import EvalOptions
from shared.tasks.edm import EDMTask
from shared.tasks.image_generation.samples import sample_run, write_samples_png
from shared.tasks.image_generation.task import ImageGeneration
from shared.tasks.outputs import OUTPUTS
from tests.conftest import LOCAL, TINY
from workers.reporting import ListReporter
from workers.train_block import train_block


class QuietConfig(Section):
    """The test task's own config section."""

    loudness: float = Field(0.0, ge=0, le=1, description="How loud the quiet images are.")


class QuietImages(ImageGeneration):
    """Image generation under another name, with a config section of its own, planned with its name and axis like
    any new task."""

    name = "quiet_images"
    outputs = frozenset({SAMPLES_PNG})
    section, section_model = "quiet", QuietConfig
    plan_header = EDMTask.plan_header


class QuietOutputs:
    name = "quiet_images"

    def write_artefacts(self, run_dir, config, manifest, storage, run_id, blocks, model) -> str:
        write_samples_png(run_dir, config, model=model)
        return "samples.png"

    def sample_images(self, run_dir, config, **params):  # the sampler its SAMPLES_PNG output serves
        return sample_run(run_dir, config, **params)

    def evaluate(self, run_dir, config, options: EvalOptions) -> dict:
        model, manifest = load_assembled(run_dir, options.weights)
        z = torch.zeros(2, 1, 28, 28)
        denoised = model(z, torch.full((2,), 1.0), torch.zeros(2, dtype=torch.long))
        return {
            "task": self.name,
            "blocks": len(manifest["blocks"]),
            "mean_abs": float(denoised.abs().mean()),
            "loudness": config.quiet.loudness,
        }

    def summary(self, result: dict, options: EvalOptions) -> str:
        return f"{result['blocks']} blocks, mean |D(0)| {result['mean_abs']:.4f}"


@pytest.fixture
def quiet_task():
    TASKS[QuietImages.name], OUTPUTS[QuietOutputs.name] = QuietImages, QuietOutputs()
    yield
    del TASKS[QuietImages.name], OUTPUTS[QuietOutputs.name]


def test_a_task_defined_elsewhere_plans_trains_assembles_evaluates_and_is_served(quiet_task, redis_client, tmp_path):
    raw = yaml.safe_load(TINY.read_text())
    raw["task"], raw["quiet"] = "quiet_images", {"loudness": 0.25}
    raw["train"].update(steps_per_block=4, checkpoint_every_steps=4, log_every_steps=2)
    config = parse_config(raw)
    assert config.quiet.loudness == 0.25 and "text" not in config.model_dump()  # its own section, no other
    assert "### `quiet` (task `quiet_images`)" in render_config_doc()
    with pytest.raises(ConfigError, match="quiet: the section of another task; this run's task is image_generation"):
        parse_config({**raw, "task": "image_generation"})
    plan = plan_json(config)
    assert (plan["task"], plan["axis"], len(plan["blocks"])) == ("quiet_images", "sigma", 2)

    store, run_id, run_dir = Store(redis_client, prefix="t-seam"), "quiet-run", tmp_path / "quiet-run"
    create_run(config, store=store, run_id=run_id, run_dir=run_dir)
    records = []
    for spec in block_specs(config):  # each block alone, in this process, no Ray
        job = BlockJob(run_id=run_id, config=config, block=spec)
        reporter = ListReporter(tmp_path / "checkpoints" / str(spec.index))
        final = train_block(job, data=task_for(config).train_batches(config, seed=job.seed), reporter=reporter)
        shutil.copyfile(reporter.latest_checkpoint / "block.safetensors", run_dir / block_file(spec.index))
        records.append(
            BlockRecord(
                index=spec.index,
                state=State.SUCCEEDED,
                step=final["step"],
                weights_file=block_file(spec.index),
                sha256=sha256_file(run_dir / block_file(spec.index)),
            )
        )
    manifest = assemble(config, block_specs(config), boundaries(config), records, run_dir)
    assert manifest["task"] == "quiet_images" and len(manifest["blocks"]) == 2
    model, _ = load_assembled(run_dir)
    assert write_run_artefacts(run_dir, config, manifest, None, run_id, records, model) == "samples.png"
    store.set_run_state(run_id, State.SUCCEEDED)

    evaluated = CliRunner().invoke(cli_app, ["eval", str(run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.output)
    assert result["task"] == "quiet_images" and result["blocks"] == 2 and result["mean_abs"] > 0
    assert result["loudness"] == 0.25  # the run's own section, read back from the run directory
    assert json.loads((run_dir / "eval.json").read_text()) == result
    line = CliRunner().invoke(cli_app, ["eval", str(run_dir)])
    assert line.exit_code == 0 and line.output.startswith("2 blocks, mean |D(0)|"), line.output

    api = TestClient(create_app(store=store, runs_dir=tmp_path, api_token=None, ready=lambda: {}), base_url=LOCAL)
    stored = api.get(f"/v1/runs/{run_id}/samples.png")
    assert stored.status_code == 200 and stored.content == (run_dir / "samples.png").read_bytes()
    fresh = api.get(f"/v1/runs/{run_id}/samples.png", params={"num_per_class": 1, "steps": 2})
    assert fresh.status_code == 200 and fresh.content.startswith(b"\x89PNG")
    assert api.get(f"/v1/runs/{run_id}/samples.txt").status_code == 409  # it declares no text samples
    predicted = api.post(f"/v1/runs/{run_id}/predict", json={"images": [[[[0.0] * 28] * 28]]})
    assert predicted.status_code == 409 and "does not label images" in predicted.text
