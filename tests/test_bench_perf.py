"""The performance benchmarks run and report what they claim (their goals are checked by running them,
not here): keys other tools read, and the memory measurement agreeing with its analytic account."""

import json

from typer.testing import CliRunner

from coordinator.cli import app
from tests.conftest import REPO

runner = CliRunner()
MEMORY = ["model.num_layers=4", "model.hidden_size=384", "model.num_heads=6", "blocks.num_blocks=2"]


def test_bench_memory_measures_what_the_analytic_account_predicts(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = ["bench", "memory", str(REPO / "configs" / "memory.yaml"), "--json"]
    result = runner.invoke(app, [*args, *(a for o in MEMORY for a in ("--set", o))])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["num_blocks"] == 2 and len(doc["block_bytes"]) == 2
    assert doc["ratio"] == doc["e2e_bytes"] / max(doc["block_bytes"]) and doc["ratio"] > 1.5
    analytic = doc["analytic"]["e2e"]["total_bytes"]
    assert abs(doc["e2e_bytes"] - analytic) / analytic < 0.25
    assert doc["e2e_checkpointed_bytes"] <= doc["e2e_bytes"] * 1.05
    assert list((tmp_path / "benchmarks" / "results").glob("memory-*.json"))


def test_bench_sampling_reports_per_step_ratio(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "bench",
            "sampling",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--batch",
            "8",
            "--steps",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["num_blocks"] == 3 and doc["ratio"] == doc["e2e_s_per_step"] / doc["blockwise_s_per_step"]
    assert doc["ratio"] > 1.0  # one 2-layer block per step vs 6 layers


def test_gpu_script_runs_on_cpu_with_tiny_configs(tmp_path):
    """benchmarks/gpu.sh is checked here on CPU (TINY=1) before it ever spends GPU time."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "TINY": "1", "BIN": os.path.dirname(sys.executable)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    for kind in (
        "memory-dit-s",
        "memory-dit-b",
        "throughput-dit-s-cpu",
        "throughput-dit-s-bf16",
        "sampling-dit-s",
        "sampling-dit-b",
        "device",
    ):
        assert any(n.startswith(kind) for n in names), (kind, names)
    throughput = json.loads(next(tmp_path.glob("throughput-dit-b-cpu*.json")).read_text())
    assert throughput["block"]["steps_per_s"] > 0 and throughput["e2e"]["layers"] == 4
