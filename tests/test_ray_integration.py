"""End to end on a real local Ray cluster and a real redis-server: 2 blocks trained concurrently as
independent Ray Train jobs -> assembled -> sampled."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from PIL import Image

from coordinator.records import State
from coordinator.store import Store
from shared.checkpoint import load_manifest, sha256_file
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow


# Commands that read a finished run directory need neither Ray nor Redis: they run in this process (a CLI
# subprocess costs ~5 s of imports on these 2 cores); `train` and `bench` run as the user runs them.
IN_PROCESS = {"eval", "predict", "report", "sample"}


def dblocks(*args, env, timeout=400):
    if args[0] in IN_PROCESS:
        from types import SimpleNamespace

        from typer.testing import CliRunner

        from coordinator.cli import app

        result = CliRunner().invoke(app, [str(a) for a in args], env=env)
        return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


def test_train_assemble_sample(tmp_path, ray_env, redis_url):
    run_dir = tmp_path / "run"
    result = dblocks("train", str(TINY), "--out", str(run_dir), env=ray_env)
    assert result.returncode == 0, result.stdout + result.stderr

    # Artefacts: resolved config, verified manifest, one safetensors file per block, the sample grid.
    manifest = load_manifest(run_dir)
    assert [b["index"] for b in manifest["blocks"]] == [0, 1]
    assert all((run_dir / b["file"]).suffix == ".safetensors" for b in manifest["blocks"])
    assert manifest["blocks"][0]["sigma_hi"] == 80.0 and manifest["blocks"][1]["sigma_lo"] == 0.002
    assert (run_dir / "config.yaml").is_file()
    grid = Image.open(run_dir / "samples.png")
    assert grid.format == "PNG"
    assert grid.size == (2 * (2 * 30 + 2), 2 * (10 * 30 + 2))  # 2 columns x 10 rows (one per class), 2x scale

    # Pictures: hand-over trajectory (noise + 2 blocks + final = 4 columns), loss curves, sigma-loss, previews.
    trajectory = Image.open(run_dir / "trajectory.png")
    assert trajectory.size == (3 * (4 * 30 + 2), 3 * (6 * 30 + 2))
    assert Image.open(run_dir / "loss_curves.png").format == "PNG"
    assert Image.open(run_dir / "sigma_loss.png").format == "PNG"
    previews = sorted(p.name for p in (run_dir / "previews").glob("*.png"))
    assert previews == ["block_0_step_40.png", "block_1_step_40.png"]
    report = dblocks("report", str(run_dir), env=ray_env)
    assert report.returncode == 0 and (run_dir / "report.html").read_text().count("data:image/png") >= 6

    # Durable state in Redis: the run and both blocks succeeded, on their first attempt.
    store = Store(redis.Redis.from_url(redis_url), prefix="t-ray")
    # (other tests of the session may have left runs under the prefix: this test's run is the one in run_dir)
    (run_id,) = [r for r in store.list_runs() if Path(store.get_run(r).run_dir).resolve() == run_dir.resolve()]
    assert store.get_run(run_id).state == State.SUCCEEDED
    blocks = store.get_blocks(run_id)
    assert [(b.state, b.attempt, b.step) for b in blocks] == [(State.SUCCEEDED, 1, 40)] * 2

    # Concurrency: both blocks were RUNNING before either finished (2 CPUs, 1 CPU per block).
    transitions = [(e["block"], e["state"]) for e in store.events(run_id) if e["kind"] == "block_state"]
    first_done = next(i for i, (_, s) in enumerate(transitions) if s == "SUCCEEDED")
    assert {b for b, s in transitions[:first_done] if s == "RUNNING"} == {"0", "1"}

    # Sampling from the assembled run directory, raw samples in the data scale.
    npz = tmp_path / "s.npz"
    result = dblocks("sample", str(run_dir), "--num-per-class", "3", "--steps", "4", "--out", str(npz), env=ray_env)
    assert result.returncode == 0, result.stderr
    data = np.load(npz)
    assert data["samples"].shape == (30, 1, 28, 28) and data["samples"].dtype == np.float32
    assert data["labels"].tolist() == [c for c in range(10) for _ in range(3)]
    assert np.isfinite(data["samples"]).all()


def test_end_to_end_baseline_goes_through_the_same_path_data_parallel_on_numpy_arrays(tmp_path, ray_env):
    """The end-to-end baseline (B = 1, every layer) through the same coordinator and Ray path, and trained data
    parallel: num_workers_per_block=2, one block trained by two DDP workers (gloo on CPU), weights saved unwrapped;
    each worker also reserves Ray's `memory` resource (resources.memory_gb_per_block). Its data: an .npz of float
    arrays with labels (the form of pre-encoded latents), used as stored: sigma_data from the measured std, samples
    back in the data's own scale and shape (one Ray run for both, to keep the suite's Ray runs few)."""
    from shared.assembly import load_assembled
    from shared.config import load_config

    rng = np.random.default_rng(0)
    images = rng.normal(0.5, 1.5, (60, 3, 16, 16)).astype(np.float32)  # not in [-1, 1]: a latent's own scale
    np.savez(tmp_path / "latents.npz", images=images, labels=np.arange(60) % 3)
    run_dir = tmp_path / "e2e"
    overrides = ["train.mode=end_to_end", "train.steps_per_block=10", "resources.num_workers_per_block=2",
                 "resources.memory_gb_per_block=0.25", "data.memory_limit_mb=128",
                 f"data.source={tmp_path / 'latents.npz'}", "data.test_fraction=0.1", "model.patch_size=8"]  # fmt: skip
    result = dblocks(
        "train", str(TINY), "--out", str(run_dir), *(a for o in overrides for a in ("--set", o)), env=ray_env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = load_manifest(run_dir)
    assert manifest["mode"] == "end_to_end" and manifest["boundaries"] == [0.002, 80.0]
    assert [b["layers"] for b in manifest["blocks"]] == [[0, 1]]
    assert (run_dir / "samples.png").is_file()
    denoiser, manifest = load_assembled(run_dir)  # strict load: no "module." prefixes, every tensor present
    assert manifest["blocks"][0]["steps"] == 10 and len(denoiser.blocks) == 1

    config = load_config(run_dir / "config.yaml")
    assert (config.data.format, config.data.num_classes, config.data.channels) == ("numpy", 3, 3)
    assert config.noise.sigma_data == pytest.approx(float(images.std()), rel=0.05)
    npz = tmp_path / "s.npz"
    result = dblocks("sample", str(run_dir), "--num-per-class", "2", "--steps", "4", "--out", str(npz), env=ray_env)
    assert result.returncode == 0, result.stderr
    with np.load(npz) as saved:
        assert saved["samples"].shape == (6, 3, 16, 16) and saved["labels"].tolist() == [0, 0, 1, 1, 2, 2]
        assert np.abs(saved["samples"]).max() > 1.0  # in the data's scale, not clipped to an image's [-1, 1]


def test_blocks_fine_tune_from_an_end_to_end_run_on_the_flow_axis(tmp_path, ray_env):
    """`dblocks train --set init.checkpoint=RUN` through Ray on the flow axis: each block starts from its layer of
    an end-to-end flow run (written with the project's own formats; test_pretrained.py slices it without Ray), the
    manifest records the source and its sha256, and the assembled model samples. At lr 1e-9 the blocks' trained
    weights are still their slices of the source: it is the source they started from."""
    from safetensors.torch import load_file

    from shared.assembly import load_assembled
    from tests.test_pretrained import end_to_end_run

    flow = {"axis": "flow", "p_mean": 0.0, "p_std": 1.0, "sigma_min": 0.001001, "sigma_max": 999.0}
    model = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 7}
    tiny = {"model": model, "blocks": {"num_blocks": 2}, "noise": flow}
    source, ema = end_to_end_run(tmp_path, tiny)
    run_dir = tmp_path / "blocks"
    overrides = [f"init.checkpoint={source}", "train.lr=1e-9", "train.steps_per_block=4", "train.warmup_steps=0"]
    overrides += [f"noise.{k}={v}" for k, v in flow.items()]
    result = dblocks(
        "train", str(TINY), "--out", str(run_dir), *(a for o in overrides for a in ("--set", o)), env=ray_env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    denoiser, manifest = load_assembled(run_dir)
    assert manifest["task_options"] == {"precond": "flow", "loss": "velocity"}
    assert manifest["init"]["sha256"] == sha256_file(source / "block_0.safetensors")
    assert manifest["init"]["format"] == "run" and (run_dir / "samples.png").is_file()
    for index in (0, 1):  # block b holds source layer b as its layer 0, and its own copy of everything else
        weights = load_file(str(run_dir / f"block_{index}.safetensors"))
        assert torch.allclose(weights["model.layers.0.qkv.weight"], ema[f"layers.{index}.qkv.weight"], atol=1e-6)
        assert torch.allclose(weights["model.head.weight"], ema["head.weight"], atol=1e-6)


def test_dispatch_benchmark_reports_its_json(tmp_path, ray_env):
    """`bench dispatch` through the real coordinator and Ray. `bench scaling` times the same `timed_run` three more
    times (and plain processes); it is left to the benchmark itself to keep this suite's Ray runs few."""
    tiny = [
        "--set",
        "model.num_layers=2",
        "--set",
        "model.hidden_size=32",
        "--set",
        "model.num_heads=2",
        "--set",
        "model.patch_size=7",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.steps_per_block=20",
        "--set",
        "train.log_every_steps=10",
        "--set",
        "train.preview_every_steps=0",
    ]
    for kind, keys in (
        (
            "dispatch",
            {"first_step_s", "overhead_s_per_block", "teardown_s_per_block", "overhead_fraction_of_10min_job"},
        ),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "coordinator.cli",
                "bench",
                kind,
                str(REPO / "configs" / "quickstart.yaml"),
                *tiny,
                "--results-dir",
                str(tmp_path),
                "--json",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=ray_env,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        doc = json.loads(result.stdout)
        assert keys <= set(doc) and doc["num_blocks"] == 2, doc
        assert all(v > 0 for v in doc.get("block_train_s_alone", [1])) and doc.get("first_step_s", 1) > 0
        assert list(tmp_path.glob(f"{kind}-*.json"))


def test_classification_trains_blockwise_and_evaluates(tmp_path, ray_env):
    """Label denoising through the same Ray path: two blocks, assembled, held-out accuracy and predictions."""
    run_dir = tmp_path / "classify"
    overrides = ["task=classification", "train.steps_per_block=80", "train.batch_size=64", "train.lr=0.003"]
    result = dblocks(
        "train", str(TINY), "--out", str(run_dir), *(a for o in overrides for a in ("--set", o)), env=ray_env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_manifest(run_dir)["task"] == "classification"
    assert (run_dir / "confusion.png").is_file() and (run_dir / "block_probability.png").is_file()
    assert not (run_dir / "samples.png").exists()

    evaluated = dblocks("eval", str(run_dir), "--json", env=ray_env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["task"] == "classification" and result["num_examples"] == 1000 and result["num_steps"] == 2
    # 80 steps of a 1-layer ViT per block is a smoke test, not training: accuracy is for configs/classify.yaml
    # (docs/tasks.md). Here: a well-formed evaluation of every held-out example.
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["ece"] <= 1.0
    assert result["start"] == "noise" and result["accuracy"] == result["accuracy_noise_start"]
    assert 0.0 <= result["accuracy_zero_start"] <= 1.0
    assert sum(map(sum, result["confusion"])) == 1000 and len(result["true_class_probability_by_step"]) == 2

    images = np.zeros((3, 1, 28, 28), dtype=np.float32) - 1.0
    np.savez(tmp_path / "digits.npz", images=images)
    predicted = dblocks("predict", str(run_dir), str(tmp_path / "digits.npz"), "--json", env=ray_env)
    assert predicted.returncode == 0, predicted.stderr
    labels = json.loads(predicted.stdout)["labels"]
    assert len(labels) == 3 and all(0 <= label < 10 for label in labels)
    refused = dblocks("sample", str(run_dir), "--out", str(tmp_path / "x.png"), env=ray_env)
    assert refused.returncode == 2 and "dblocks predict" in refused.stderr


def test_text_trains_blockwise_evaluates_and_samples(tmp_path, ray_env):
    """MD4 text through the same Ray path: two blocks in t, assembled, held-out BPC, text samples and previews."""
    run_dir = tmp_path / "text"
    overrides = [
        "model.num_layers=2",
        "model.hidden_size=32",
        "model.num_heads=2",
        "blocks.num_blocks=2",
        "text.seq_len=16",
        "text.eval_stderr=0.05",
        "text.sample_steps=8",
        "train.steps_per_block=40",
        "train.batch_size=16",
        "train.warmup_steps=5",
        "train.preview_every_steps=20",
        "train.checkpoint_every_steps=20",
    ]
    config = str(REPO / "configs" / "text.yaml")
    result = dblocks("train", config, "--out", str(run_dir), *(a for o in overrides for a in ("--set", o)), env=ray_env)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = load_manifest(run_dir)
    assert manifest["task"] == "text" and manifest["boundaries"] == [0.0, 0.5, 1.0]
    assert manifest["task_options"] == {"vocabulary": " abcdefghijklmnopqrstuvwxyz", "seq_len": 16}
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 8
    previews = sorted(p.name for p in (run_dir / "previews").iterdir())
    assert "block_0_step_40.txt" in previews and "block_1_step_20.txt" in previews
    assert "guessed:" in (run_dir / "previews" / "block_1_step_40.txt").read_text()
    assert (run_dir / "bpc_curve.png").is_file() and (run_dir / "loss_curves.png").is_file()
    from coordinator.artefacts.report import render_report  # in process: one CLI start less for the suite
    from coordinator.cli.common import run_config

    page = render_report(run_dir, run_config(run_dir))
    assert "<h2>Samples</h2>" in page and "block 1 at step 40" in page and page.count("data:image/png") == 2

    evaluated = dblocks("eval", str(run_dir), "--json", env=ray_env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["task"] == "text" and result["bpc_stderr"] <= 0.05
    # 40 steps is a smoke test: the bound is finite and no worse than a uniform guess over 27 symbols (plus noise).
    assert 0 < result["bpc"] < 4.755 + 3 * result["bpc_stderr"] and 3.5 < result["unigram_bpc"] < 4.5

    out = tmp_path / "samples.txt"
    sampled = dblocks("sample", str(run_dir), "--out", str(out), "--num", "3", "--length", "10", env=ray_env)
    assert sampled.returncode == 0, sampled.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(
        len(line) == 10 and set(line) <= set(" abcdefghijklmnopqrstuvwxyz") for line in lines
    )


def test_autoregressive_trains_four_blocks_through_ray_evaluates_and_continues_prompts(tmp_path, ray_env, redis_url):
    """The autoregressive LM through the same Ray path: four blocks in sigma, a BPE trained when the run starts,
    assembled, evaluated (MAUVE, generative perplexity), and prompted samples through the API."""
    from fastapi.testclient import TestClient

    from coordinator.api import create_app
    from tests.conftest import LOCAL

    run_dir = tmp_path / "lm"
    overrides = [
        "model.num_layers=4",
        "model.hidden_size=32",
        "model.num_heads=2",
        "autoregressive.vocab_size=300",
        "autoregressive.seq_len=16",
        "autoregressive.sample_steps=4",
        "autoregressive.eval_prompts=16",
        "autoregressive.eval_prompt_tokens=4",
        "autoregressive.eval_continuation_tokens=4",
        "autoregressive.reference_layers=1",
        "autoregressive.reference_width=32",
        "autoregressive.reference_steps=20",
        "train.steps_per_block=20",
        "train.batch_size=8",
        "train.warmup_steps=5",
        "train.preview_every_steps=20",
        "train.checkpoint_every_steps=20",
    ]
    config = str(REPO / "configs" / "autoregressive.yaml")
    result = dblocks("train", config, "--out", str(run_dir), *(a for o in overrides for a in ("--set", o)), env=ray_env)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = load_manifest(run_dir)
    assert manifest["task"] == "autoregressive" and len(manifest["blocks"]) == 4
    assert manifest["task_options"]["tokenizer"] == "bpe" and '"merges"' in manifest["task_options"]["tokenizer_json"]
    assert len((run_dir / "samples.txt").read_text().splitlines()) == 8
    assert "guessed:" in (run_dir / "previews" / "block_3_step_20.txt").read_text()

    env = {**ray_env, "DBLOCKS_CACHE": str(tmp_path / "cache")}
    evaluated = dblocks("eval", str(run_dir), "--json", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert {"task", "mauve", "gen_ppl", "reference_ppl"} <= set(result) and result["task"] == "autoregressive"
    assert 0 <= result["mauve"] <= 1 and result["gen_ppl"] > 1 and result["num_prompts"] == 16
    assert "ppl" not in result  # a denoiser has no exact likelihood; the backprop baseline reports one

    store = Store(redis.Redis.from_url(redis_url), prefix="t-ray")
    (run_id,) = [r for r in store.list_runs() if Path(store.get_run(r).run_dir).resolve() == run_dir.resolve()]
    api = TestClient(create_app(store=store, runs_dir=tmp_path, api_token=None, ready=lambda: {}), base_url=LOCAL)
    answer = api.get(f"/v1/runs/{run_id}/samples.txt", params={"prompt": "The\nfunction", "num": 2, "length": 5})
    assert answer.status_code == 200, answer.text
    lines = answer.text.splitlines()
    assert len(lines) == 2 and all(line.startswith("The\\nfunction") for line in lines)  # one sample per line
    too_long = api.get(f"/v1/runs/{run_id}/samples.txt", params={"num": 200, "length": 2000})
    assert too_long.status_code == 422 and "num x length" in too_long.text


def test_recurrent_depth_trains_through_ray_evaluates_with_its_flops_and_samples_k_iterations(tmp_path, ray_env):
    """`dblocks train configs/recurrent.yaml` through Ray (Huginn's recipe here: the denoising recipe's path is the
    autoregressive task's, above), `dblocks eval` with the training FLOPs, and `dblocks sample --iterations K`."""
    run_dir = tmp_path / "recurrent"
    overrides = [
        "model.num_layers=4", "model.hidden_size=32", "model.num_heads=2", "autoregressive.prelude_layers=1",
        "autoregressive.coda_layers=1", "autoregressive.objective=backprop", "autoregressive.max_iterations=4",
        "autoregressive.backprop_iterations=2", "autoregressive.tokenizer=bytes", "autoregressive.seq_len=16",
        "autoregressive.sample_steps=3", "autoregressive.eval_prompts=8", "autoregressive.eval_prompt_tokens=4",
        "autoregressive.eval_continuation_tokens=4", "autoregressive.reference_layers=1",
        "autoregressive.reference_width=32", "autoregressive.reference_steps=10", "train.steps_per_block=10",
        "train.batch_size=8", "train.warmup_steps=2", "train.checkpoint_every_steps=10",
    ]  # fmt: skip
    config = str(REPO / "configs" / "recurrent.yaml")
    result = dblocks("train", config, "--out", str(run_dir), *(a for o in overrides for a in ("--set", o)), env=ray_env)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = load_manifest(run_dir)
    assert manifest["task"] == "recurrent_depth" and len(manifest["blocks"]) == 1
    assert manifest["task_options"]["prelude_layers"] == 1 and manifest["task_options"]["objective"] == "backprop"
    env = {**ray_env, "DBLOCKS_CACHE": str(tmp_path / "cache")}
    evaluated = dblocks("eval", str(run_dir), "--json", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["task"] == "recurrent_depth" and result["recipe"] == "backprop" and result["iterations"] == 3
    assert 0 <= result["mauve"] <= 1 and result["train_flops"] == pytest.approx(10 * result["flops_per_step"])
    out = tmp_path / "s.txt"
    sampled = dblocks("sample", str(run_dir), "--prompt", "def ", "--iterations", "5", "--num", "2", "--out", str(out),
                      env=env)  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    assert [line[:4] for line in out.read_text().splitlines()] == ["def ", "def "]
    refused = dblocks("sample", str(run_dir), "--iterations", "0", "--out", str(out), env=env)
    assert refused.returncode != 0 and "steps 0: must be 1.." in refused.stdout + refused.stderr


DETACHED_JOBS = """
import sys, time
import ray
from coordinator.dispatch import RayDispatcher, actor_name
from coordinator.reconcile import Resources
from shared.config import load_config
from shared.job import BlockJob
from shared.plan import block_specs

config = load_config(sys.argv[1], ["train.steps_per_block=100000"])
job = BlockJob(run_id="detached", config=config, block=block_specs(config)[0])
first = RayDispatcher(address=sys.argv[2], namespace="t-detached")
first.connect()

def gone(attempt):
    named = {"name": actor_name(job, attempt), "namespace": first.namespace}
    return named not in ray.util.list_named_actors(all_namespaces=True)

def wait_until(predicate, what):
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)

first.submit(job, sys.argv[3], Resources(cpu=1), attempt=1)
assert first.in_flight("detached") == {0} and not gone(1)
first.cancel("detached")  # a tracked job: killed
wait_until(lambda: gone(1), "the cancelled job's actor to end")
assert first.in_flight("detached") == set()

first.submit(job, sys.argv[3], Resources(cpu=1), attempt=2)
first.forget()  # stepping down: the job goes on
assert first.in_flight("detached") == set() and not gone(2)
later = RayDispatcher(address=sys.argv[2], namespace="t-detached")  # the next leader
assert not later.attach(job, Resources(cpu=1), attempt=1)  # cancelled: nothing to attach to
assert later.attach(job, Resources(cpu=1), attempt=2) and later.in_flight("detached") == {0}
later.forget()
later.stop(job, attempt=2)  # the cancel path for a job a previous leader launched
wait_until(lambda: gone(2), "the stopped job's actor to end")
print("DETACHED-OK")
"""


FLAKY_BLOCK = """
import sys
import ray
import workers.ray_entry as entry
from shared.config import load_config
from shared.job import BlockJob
from shared.plan import block_specs

ray.init(address=sys.argv[2], log_to_driver=False)
real, resumed_from = entry.train_here, []

def once_failing(job, storage, reporter, **kw):
    # the first try raises right after its step-20 checkpoint (a storage hiccup, a bad batch): later tries run clean
    resumed_from.append(kw["resume"]["step"] if kw["resume"] else 0)
    if len(resumed_from) == 1:
        save = reporter.checkpoint
        def checkpoint(metrics, directory):
            save(metrics, directory)
            if metrics["step"] == 20:
                raise OSError("storage hiccup")
        reporter.checkpoint = checkpoint
    return real(job, storage, reporter, **kw)

entry.train_here = once_failing
for failures in (1, 0):
    resumed_from.clear()
    config = load_config(sys.argv[1], ["train.steps_per_block=40", "train.checkpoint_every_steps=10",
                                       "train.log_every_steps=10", f"train.max_failures={failures}"])
    job = BlockJob(run_id=f"flaky{failures}", config=config, block=block_specs(config)[0])
    result = entry.train_in_actor(job.to_dict(), sys.argv[3], previews=False)
    if failures:  # retried in place from the newest checkpoint
        assert result["ok"] and resumed_from == [0, 20], (result, resumed_from)
        assert result["metrics"]["step"] == 40 and result["metrics"]["resumed_from_step"] == 20
        assert result["checkpoint_path"].endswith("/actor/checkpoint_000000040"), result
    else:  # no restart allowed: the job fails and says why
        assert not result["ok"] and "storage hiccup" in result["error"] and resumed_from == [0], result
print("FLAKY-OK")
"""


def test_a_block_actor_retries_a_failed_try_from_its_newest_checkpoint(tmp_path, ray_env):
    """`train.max_failures` in a block actor: an exception mid-training is retried in place from the block's newest
    checkpoint (the same attempt), and with no failures allowed the job fails with the error."""
    run_script(FLAKY_BLOCK, "FLAKY-OK", tmp_path, ray_env)


def test_block_jobs_are_detached_actors_that_a_later_dispatcher_attaches_to_and_cancel_stops(tmp_path, ray_env):
    run_script(DETACHED_JOBS, "DETACHED-OK", tmp_path, ray_env)


def run_script(script: str, done: str, tmp_path, ray_env) -> None:
    """Run `script` as a driver of the shared cluster (argv: the tiny config, the Ray address, a checkpoint folder);
    it prints `done` when every assertion in it held."""
    out = subprocess.run(
        [sys.executable, "-c", script, str(TINY), ray_env["RAY_ADDRESS"], str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ray_env,
        timeout=300,
    )
    assert done in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
