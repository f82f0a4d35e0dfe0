"""Config validation and the CLI contract: plan output, and bad configs that start and write nothing."""

import json

import pytest
from typer.testing import CliRunner

from coordinator.cli import app
from shared.config import ConfigError, load_config, parse_config
from tests.conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart.yaml"
runner = CliRunner()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["blocks.num_blocks=0"], "blocks.num_blocks"),
        (["noise.sigma_min=80", "noise.sigma_max=1"], "sigma_min"),
        (["data.dataset=cifar99"], "data.dataset"),
        (["train.bogus=1"], "train.bogus"),
        (["blocks.num_blocks=4"], "num_blocks"),  # 6 layers do not split into 4 blocks
        (["model.patch_size=5"], "patch_size"),  # does not divide 28
        (["model.hidden_size=30"], "num_heads"),
        (["blocks.layers=[1,2]"], "blocks.layers"),
        (["train.lr=-1"], "train.lr"),
        (["resources.per_block={3: {gpus: 1}}"], "resources.per_block.3"),  # quickstart has blocks 0..2
        (["resources.per_block={0: {memory_gb: -1}}"], "resources.per_block.0.memory_gb"),
        (["resources.memory_gb_per_block=-2"], "resources.memory_gb_per_block"),
        (["train.block_step_scale={3: 2}"], "train.block_step_scale.3"),  # no block 3
        (["train.block_step_scale={1: 0}"], "train.block_step_scale.1"),
        (["train.block_step_scale={1: 100}", "train.steps_per_block=200000"], "train.block_step_scale.1"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, overrides)
    assert field in str(err.value)


def test_per_block_resources_override_the_defaults_field_by_field():
    config = load_config(
        QUICKSTART, ["resources.memory_gb_per_block=1.5", "resources.per_block={2: {gpus: 1, memory_gb: 40}}"]
    )
    small, large = config.resources.for_block(0), config.resources.for_block(2)
    assert (small.cpus, small.gpus, small.memory_bytes) == (1.0, 0.0, 1_500_000_000)
    assert (large.cpus, large.gpus, large.memory_bytes) == (1.0, 1.0, 40_000_000_000)


def test_block_step_scale_sets_each_blocks_budget_in_the_plan_and_the_job():
    from shared.job import BlockJob
    from shared.plan import block_specs, layer_updates, plan_json

    config = load_config(QUICKSTART, ["train.steps_per_block=300", "train.block_step_scale={1: 2.5}"])
    assert [config.train.steps_for(i) for i in range(3)] == [300, 750, 300]
    assert [b["steps"] for b in plan_json(config)["blocks"]] == [300, 750, 300]
    assert [BlockJob(run_id="r", config=config, block=s).steps for s in block_specs(config)] == [300, 750, 300]
    assert layer_updates(config) == (300 + 750 + 300) * 2  # 2 layers per block
    assert layer_updates(config.with_overrides(["train.block_step_scale={}"])) == 300 * 6
    end_to_end = config.with_overrides(["train.mode=end_to_end"])  # block-wise budgets: as blocks.layers, unused
    assert [b["steps"] for b in plan_json(end_to_end)["blocks"]] == [300] and layer_updates(end_to_end) == 300 * 6


def test_config_hash_ignores_spelled_out_defaults_but_not_changes():
    base = load_config(QUICKSTART)
    assert load_config(QUICKSTART, ["resources.per_block={}", "train.compile=false"]).hash() == base.hash()
    assert load_config(QUICKSTART, ["train.block_step_scale={1: 1.75, 2: 0.75}"]).hash() == base.hash()  # the file
    assert load_config(QUICKSTART, ["train.lr=0.002"]).hash() != base.hash()


def test_unknown_section_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="bogus: unknown field"):
        parse_config({"bogus": {}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_parse_yaml_values():
    config = load_config(QUICKSTART, ["blocks.layers=[1, 2, 3]", "train.lr=3e-4", "train.mode=end_to_end"])
    assert config.blocks.layers == [1, 2, 3] and config.train.lr == 3e-4 and config.train.mode == "end_to_end"


@pytest.mark.parametrize(
    "num_blocks, layers, boundaries",
    [
        (2, 6, [0.002, 0.3012, 80]),
        (3, 6, [0.002, 0.17963, 0.50504, 80]),
        (4, 8, [0.002, 0.13408, 0.3012, 0.67665, 80]),
    ],
)
def test_plan_json_matches_method_table(num_blocks, layers, boundaries):
    result = runner.invoke(
        app,
        [
            "plan",
            str(QUICKSTART),
            "--set",
            f"blocks.num_blocks={num_blocks}",
            "--set",
            f"model.num_layers={layers}",
            "--set",
            "train.block_step_scale={}",  # the quickstart's budgets name its 3 blocks
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["boundaries"] == pytest.approx(boundaries, rel=5e-5)
    blocks = plan["blocks"]
    assert [b["index"] for b in blocks] == list(range(num_blocks))
    assert blocks[0]["sigma_hi"] == 80 and blocks[-1]["sigma_lo"] == 0.002  # block 0 = highest noise
    for b in blocks:
        assert b["train_sigma_lo"] <= b["sigma_lo"] < b["sigma_hi"] <= b["train_sigma_hi"]
        assert len(b["layers"]) == layers // num_blocks and b["num_params"] > 0


def test_train_with_bad_config_exits_nonzero_and_writes_nothing(tmp_path, redis_url, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DBLOCKS_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("DBLOCKS_KEY_PREFIX", "t-bad")
    keys_before = set(redis_client.keys("*"))
    result = runner.invoke(
        app, ["train", str(QUICKSTART), "--set", "blocks.num_blocks=0", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert "blocks.num_blocks" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "storage").exists()
    assert set(redis_client.keys("*")) == keys_before


def test_sample_refuses_a_directory_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["sample", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_end_to_end_is_the_one_block_plan_of_the_same_backbone():
    result = runner.invoke(app, ["plan", str(QUICKSTART), "--set", "train.mode=end_to_end", "--json"])
    plan = json.loads(result.output)
    (block,) = plan["blocks"]
    assert plan["mode"] == "end_to_end" and plan["boundaries"] == [0.002, 80.0]
    assert block["layers"] == list(range(6)) and block["train_sigma_lo"] == 0.002 and block["train_sigma_hi"] == 80
    blockwise = json.loads(runner.invoke(app, ["plan", str(QUICKSTART), "--json"]).output)
    # Same backbone: e2e has the 6 layers once plus one set of embeddings/head; blocks have 3 sets.
    assert block["num_params"] < sum(b["num_params"] for b in blockwise["blocks"])


def test_uneven_layer_split_and_uniform_partition_in_the_plan():
    result = runner.invoke(
        app,
        [
            "plan",
            str(QUICKSTART),
            "--set",
            "model.num_layers=12",
            "--set",
            "blocks.layers=[2,4,6]",
            "--set",
            "blocks.partition=uniform_log",
            "--json",
        ],
    )
    plan = json.loads(result.output)
    assert [len(b["layers"]) for b in plan["blocks"]] == [2, 4, 6]
    assert plan["boundaries"][1] == pytest.approx((0.002**2 * 80) ** (1 / 3), rel=1e-9)
