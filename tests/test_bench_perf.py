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


def test_device_check_runs_on_cpu_with_tiny_configs(tmp_path):
    """benchmarks/device_check.sh (gpu.sh, then the quickstart in bf16 and fp32 through benchmarks/local_run.py) is
    checked here on CPU (TINY=1) before it ever spends GPU time."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh"), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "TINY": "1", "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0 and "failed" not in out.stderr, out.stderr[-2000:]
    results = json.loads((tmp_path / "gpu-dit-cpu.json").read_text())
    for kind in ("memory-dit-s", "throughput-dit-s-cpu", "throughput-dit-s-bf16", "sampling-dit-s", "device"):
        assert any(name.startswith(kind) for name in results), (kind, sorted(results))
    throughput = next(v for k, v in results.items() if k.startswith("throughput-dit-s-cpu"))
    assert throughput["block"]["steps_per_s"] > 0 and throughput["e2e"]["layers"] == 4
    compiled = next(v for k, v in results.items() if k.startswith("throughput-dit-s-bf16-compile-default"))
    assert compiled["compile"] and compiled["block"]["compile_s"] > 0 and compiled["e2e"]["compile_s"] > 0
    for precision in ("bf16", "fp32"):
        quick = json.loads((tmp_path / f"local-run-quickstart-{precision}-cpu.json").read_text())
        assert quick["precision"] == precision and [b["block"] for b in quick["blocks"]] == [0, 1, 2]
        assert all(b["steps"] == 10 and b["steps_per_s_mean"] > 0 for b in quick["blocks"])


def test_bench_data_streams_two_datasets_and_reports_memory_and_rates(tmp_path, monkeypatch):
    """`dblocks bench data` on tiny sizes: both datasets are written, streamed and trained on; the keys hold."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "bench", "data", "--small-mb", "0.5", "--large-mb", "2",
         "--steps", "4", "--read-batches", "2", "--ray-data-cpus", "1", "--results-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "DBLOCKS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    small, large = doc["cases"]["small"], doc["cases"]["large"]
    assert small["loader"] == large["loader"] == "stream" and large["num_examples"] > 3 * small["num_examples"]
    assert large["bytes"] >= 2e6 and all(c["steps"] == 4 and c["read_images_per_s"] > 0 for c in (small, large))
    assert doc["peak_rss_difference_bytes"] == large["peak_rss_bytes"] - small["peak_rss_bytes"]
    readers = doc["readers"]  # Ray Data against this reader, on the small dataset
    assert set(readers) == {"dblocks", "ray_data_1cpu"}
    assert readers["ray_data_1cpu"]["reader"] == "ray.data" and readers["dblocks"]["reader"] == "dblocks"
    assert all(
        r["images_timed"] > 0 and r["read_images_per_s"] > 0 and r["first_batch_s"] > 0 for r in readers.values()
    )
    assert list(tmp_path.glob("data-*.json"))


def test_bench_coordinator_counts_a_ticks_round_trips_against_active_and_finished_runs(
    monkeypatch, tmp_path, redis_url
):
    """The real loop on a real Redis, the cluster simulated behind the dispatcher interface: round trips per tick
    grow in proportion to active runs and not at all with finished ones (the curve itself: docs/benchmarks.md)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = runner.invoke(app, ["bench", "coordinator", "--runs", "2,4", "--finished", "30", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{\n") :])
    assert [c["active_runs"] for c in doc["curve"]] == [2, 4]
    assert all(c["blocks_in_flight"] == 8 * c["active_runs"] for c in doc["curve"])
    two, four = (c["round_trips_per_tick"] for c in doc["curve"])
    assert doc["round_trips_per_active_run"] == (four - two) / 2 > 0  # each active run costs the same
    assert doc["round_trips_fixed_per_tick"] == two - 2 * doc["round_trips_per_active_run"]
    assert doc["with_finished_runs"]["round_trips_per_tick"] == two and doc["flat_in_finished_runs"]
    assert doc["linear_in_active_runs"] and doc["curve"][0]["tick_ms_median"] > 0
    assert list((tmp_path / "benchmarks" / "results").glob("coordinator-*.json"))
    bad = runner.invoke(app, ["bench", "coordinator", "--runs", "10,lots"])
    assert bad.exit_code != 0 and "--runs" in bad.output
