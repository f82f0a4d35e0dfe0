"""The block worker: holds only its own block, resumes exactly, is deterministic."""

import json
import subprocess
import sys

import pytest
import torch

from shared.checkpoint import load_training_state
from shared.config import load_config
from shared.data.builtin import load_builtin
from shared.job import BlockJob
from shared.model import BlockNet, count_params
from shared.plan import block_seed, block_specs
from tests.conftest import REPO, TINY
from workers.reporting import ListReporter
from workers.train_block import ema_decay, lr_at, train_block

PROBE = r"""
import gc, json, sys, torch
from shared.plan import block_specs
from shared.config import load_config
from shared.data.builtin import load_builtin
from shared.job import BlockJob
from workers.train_block import train_block

class Probe:
    seen = None
    def report(self, metrics):
        params = [o for o in gc.get_objects() if isinstance(o, torch.nn.Parameter)]
        Probe.seen = {"numel": sum(p.numel() for p in params), "count": len(params)}
    def checkpoint(self, metrics, directory):
        self.report(metrics)

config = load_config(sys.argv[1], ["model.num_layers=6", "blocks.num_blocks=3", "train.steps_per_block=2",
                                   "train.log_every_steps=1"])
spec = block_specs(config)[int(sys.argv[2])]
train_block(BlockJob(run_id="p", config=config, block=spec), data=load_builtin("mnist", "train", num_test=1000,
            split_seed=0), reporter=Probe())
print(json.dumps(Probe.seen))
"""


def tiny(*overrides):
    return load_config(TINY, list(overrides))


def data():
    return load_builtin("mnist", "train", num_test=1000, split_seed=0)


@pytest.mark.parametrize("index", [0, 2])
def test_a_worker_process_holds_only_its_own_block(index):
    """Every nn.Parameter alive in a fresh worker process is its block's (raw + EMA copy): no other block's."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(TINY), str(index)], capture_output=True, text=True, cwd=REPO, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    config = tiny("model.num_layers=6", "blocks.num_blocks=3")
    spec = block_specs(config)[index]
    one_block = count_params(BlockJob(run_id="p", config=config, block=spec).net)
    whole_net = sum(count_params(BlockJob(run_id="p", config=config, block=s).net) for s in block_specs(config))
    assert seen["numel"] == 2 * one_block  # weights + their EMA, nothing else
    assert seen["numel"] < whole_net


def test_checkpoint_holds_exactly_the_blocks_parameter_names():
    config = tiny("train.steps_per_block=3", "train.checkpoint_every_steps=3")
    job = BlockJob(run_id="t", config=config, block=block_specs(config)[1])
    reporter = ListReporter()
    train_block(job, data=data(), reporter=reporter)
    state = load_training_state(reporter.latest_checkpoint)
    expected = BlockNet(job.net).state_dict()
    assert set(state["model"]) == set(expected) == set(state["ema"])
    assert sum(v.numel() for v in state["model"].values()) == count_params(job.net)
    assert state["meta"]["block"] == job.block.to_dict() and state["step"] == 3


def test_same_seed_same_loss_and_resume_continues_exactly():
    config = tiny("train.steps_per_block=20", "train.checkpoint_every_steps=10", "train.log_every_steps=10")
    job = BlockJob(run_id="t", config=config, block=block_specs(config)[0])
    first, second = ListReporter(), ListReporter()
    train_block(job, data=data(), reporter=first)
    train_block(job, data=data(), reporter=second)
    assert [m["loss"] for m in first.metrics] == [m["loss"] for m in second.metrics]

    # Resume from the step-10 checkpoint: steps 11..20 must reproduce the uninterrupted run.
    resumed = ListReporter()
    state = load_training_state(first.keep_dir / "step_00000010")
    final = train_block(job, data=data(), reporter=resumed, resume=state)
    assert final["resumed_from_step"] == 10 and resumed.metrics[0]["step"] == 20
    assert resumed.metrics[-1]["loss"] == pytest.approx(first.metrics[-1]["loss"], rel=1e-6)
    end = load_training_state(resumed.latest_checkpoint)["model"]
    reference = load_training_state(first.latest_checkpoint)["model"]
    assert all(torch.allclose(end[k], reference[k], atol=1e-6) for k in reference)

    # Resumed after the last step (a restart during teardown): no step runs, yet the final checkpoint's
    # metrics still carry the loss it was saved with.
    after_end = ListReporter()
    final = train_block(job, data=data(), reporter=after_end, resume=load_training_state(first.latest_checkpoint))
    assert final["step"] == 20 and final["loss"] == pytest.approx(first.metrics[-1]["loss"])
    assert after_end.metrics[-1]["loss"] == final["loss"]


def test_block_seeds_are_distinct_and_stable():
    assert block_seed(0, 0) != block_seed(0, 1) != block_seed(1, 0)
    assert block_seed(7, 2) == block_seed(7, 2)


def test_lr_schedule_and_ema_decay():
    kw = dict(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(60, **kw) == pytest.approx(0.55)
    assert ema_decay(10_000, 100) == pytest.approx(0.5 ** (1 / 100))
    assert ema_decay(0, 100) == pytest.approx(0.1) and ema_decay(5, 0) == 0.0


def test_local_entry_point_trains_one_block(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers",
            str(TINY),
            "--block",
            "1",
            "--out",
            str(tmp_path),
            "--set",
            "train.steps_per_block=4",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 4
    assert (tmp_path / "block_1.safetensors").is_file()


def test_a_classification_block_reports_its_training_accuracy_and_it_rises():
    """The live accuracy (the task's progress metric, shown by the live table and Grafana) is measured on the
    training batch at its noise levels, with its own generator."""
    config = tiny("task=classification", "train.steps_per_block=60", "train.log_every_steps=20", "train.lr=0.003")
    job = BlockJob(run_id="t", config=config, block=block_specs(config)[1])  # the low-noise block sees the label
    reporter = ListReporter()
    train_block(job, data=data(), reporter=reporter)
    accuracies = [m["accuracy"] for m in reporter.metrics]
    assert len(accuracies) == 3 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert accuracies[-1] > 0.5  # labels noised at low sigma are easy to read back: it learns to use them


def test_history_is_written_in_segments_and_read_back_whole(tmp_path):
    """Each report rewrites only the current segment (at most HISTORY_SEGMENT_LINES lines), a restarted worker goes on
    in its last segment, and the loss curves read every segment, and a run's older single history file, by step."""
    from shared.job import HISTORY_SEGMENT_LINES, history_dir, legacy_history_path, progress_path
    from shared.pictures import block_history
    from shared.storage import Storage
    from workers.reporting import ProgressFileReporter

    storage = Storage.from_uri(tmp_path)
    job = BlockJob(run_id="r", config=load_config(TINY), block=block_specs(load_config(TINY))[0])
    directory = history_dir(storage, job)
    reporter = ProgressFileReporter(storage, progress_path(storage, job), directory, node="n")
    n = HISTORY_SEGMENT_LINES
    for step in range(1, 2 * n + n // 2 + 1):
        reporter.report({"step": step, "loss": 1.0 / step})
    assert storage.list_names(directory) == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert len(storage.read_text(f"{directory}/part-00002.jsonl").splitlines()) == n // 2
    restarted = ProgressFileReporter(storage, progress_path(storage, job), directory, node="n")
    restarted.report({"step": 2 * n + n // 2 + 1, "loss": 0.0})  # goes on in the part-filled segment
    assert len(storage.read_text(f"{directory}/part-00002.jsonl").splitlines()) == n // 2 + 1
    storage.write_text(legacy_history_path(storage, job), json.dumps({"step": 0, "loss": 9.0}) + "\n")
    history = block_history(storage, job)
    assert [m["step"] for m in history] == list(range(0, 2 * n + n // 2 + 2))
    assert json.loads(storage.read_text(progress_path(storage, job)))["step"] == 2 * n + n // 2 + 1


@pytest.mark.parametrize("task", ["image_generation", "classification", "text", "autoregressive"])
def test_every_tasks_job_crosses_to_the_worker_as_it_left(task):
    """A block job travels to its Ray worker as a dict: each task's run config (its own section included) comes
    back equal, and a job the worker cannot read fails its block rather than leave it waiting."""
    from shared.config import parse_config
    from shared.job import BlockJob
    from shared.plan import block_specs
    from workers.ray_train import fit_block

    overrides = {"autoregressive": {"tokenizer": "bytes"}} if task == "autoregressive" else {}
    config = parse_config({"task": task, **overrides, "model": {"num_layers": 6}})
    job = BlockJob(run_id="r", config=config, block=block_specs(config)[0])
    assert BlockJob.from_dict(job.to_dict()) == job
    broken = {**job.to_dict(), "config": {**job.to_dict()["config"], "nonsense": 1}}
    result = fit_block(broken, "/nonexistent", previews=False)
    assert result["ok"] is False and "nonsense" in result["error"]


def test_a_compiled_block_trains_the_same_curve_and_reports_its_compile_cost():
    """train.compile (torch.compile, inductor on CPU): the same losses as eager to float tolerance; the compile's
    cost is reported as compile_s and kept out of steps/s."""
    eager, compiled = ListReporter(), ListReporter()
    for reporter, flag in ((eager, "false"), (compiled, "true")):
        config = tiny("train.steps_per_block=12", "train.log_every_steps=4", f"train.compile={flag}")
        final = train_block(BlockJob(run_id="t", config=config, block=block_specs(config)[0]), data=data(),
                            reporter=reporter)  # fmt: skip
    losses = lambda r: [m["loss"] for m in r.metrics]  # noqa: E731
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4) and len(losses(eager)) == 3
    assert "compile_s" not in eager.metrics[0] and final["compile_s"] > 0
    first = compiled.metrics[0]  # steps 2-4 after the compile: a rate no compile slows down
    assert first["steps_per_s"] > 3 / first["compile_s"] and first["train_s"] > first["compile_s"]


def test_a_block_actors_checkpoints_keep_the_newest_two_and_resume_exactly(tmp_path):
    """workers/checkpoints.py: every checkpoint lands whole before the pointer moves to it; the newest two stay; a
    resume from what the pointer names continues the uninterrupted run exactly; a directory written without its
    pointer (a crash between the two) is never read."""
    from shared.storage import Storage
    from workers.checkpoints import ActorCheckpoints

    config = tiny("train.steps_per_block=30", "train.checkpoint_every_steps=10", "train.log_every_steps=10")
    job = BlockJob(run_id="t", config=config, block=block_specs(config)[0])
    storage = Storage.from_uri(tmp_path / "ckpt")
    checkpoints = ActorCheckpoints(storage, job, keep=2)
    assert checkpoints.latest() is None and checkpoints.load() is None

    class ToStorage(ListReporter):
        def checkpoint(self, metrics: dict, directory: str | None) -> None:
            super().checkpoint(metrics, directory)
            if directory is not None and metrics["step"] <= 20:  # the "process" dies after step 20's checkpoint
                checkpoints.save(directory, metrics["step"])

    whole = ToStorage()
    train_block(job, data=data(), reporter=whole)
    names = storage.list_dirs(storage.path(job.name, "actor"))
    assert names == ["checkpoint_000000010", "checkpoint_000000020"]
    assert checkpoints.latest() == storage.path(job.name, "actor", "checkpoint_000000020")

    resumed = ListReporter()
    final = train_block(job, data=data(), reporter=resumed, resume=checkpoints.load())
    assert final["resumed_from_step"] == 20 and final["step"] == 30
    assert final["loss"] == pytest.approx(whole.metrics[-1]["loss"], rel=1e-6)

    # step 30's files written, the pointer not yet: a resume still starts from step 20
    storage.upload_dir(whole.latest_checkpoint, storage.path(job.name, "actor", "checkpoint_000000030"))
    assert checkpoints.load()["step"] == 20
    checkpoints.save(str(whole.latest_checkpoint), 30)
    assert checkpoints.load()["step"] == 30
    assert storage.list_dirs(storage.path(job.name, "actor")) == ["checkpoint_000000020", "checkpoint_000000030"]


def test_a_block_actor_fails_its_job_cleanly_when_it_cannot_read_it():
    from workers.ray_entry import train_in_actor

    config = tiny()
    job = BlockJob(run_id="r", config=config, block=block_specs(config)[0])
    broken = {**job.to_dict(), "config": {**job.to_dict()["config"], "nonsense": 1}}
    result = train_in_actor(broken, "/nonexistent", previews=False)
    assert result["ok"] is False and "nonsense" in result["error"] and result["checkpoint_path"] is None
