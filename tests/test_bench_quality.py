"""The quality benchmark's bookkeeping: paper rows match case labels, raw and EMA both reported, partial
results summarised honestly, differences carry their uncertainty (no training here: synthetic run records)."""

import json

import pytest

from benchmarks.quality import BUDGETS, budget_spec, case_config, quality_of, summarise
from shared.tasks.bench import difference
from shared.tasks.image_generation.bench import PAPER, write_quality_doc

IMAGE_BUDGETS = tuple(quality_of("image_generation").budgets)
assert set(IMAGE_BUDGETS) <= set(BUDGETS)


def test_every_paper_entry_names_a_case_of_some_budget():
    labels = {case.label for budget in IMAGE_BUDGETS for case in budget_spec(budget).cases}
    assert set(PAPER) <= labels, set(PAPER) - labels


def test_cases_compare_at_equal_steps_and_the_benchmarks_sampler_whatever_the_quickstart_says():
    """The quickstart's per-block budgets and its 20 sampler steps are `make run`'s; every benchmark case trains
    equal steps per block and samples at 50 steps, as the committed results were measured."""
    for budget in IMAGE_BUDGETS:
        spec = budget_spec(budget)
        for case in spec.cases:
            config = case_config(quality_of("image_generation").default_config, spec, case, seed=1)
            assert config.train.block_step_scale == {}, (budget, case.label)
            assert config.sample.num_steps == 50, (budget, case.label)
            assert config.train.seed == 1


def test_medium_budget_covers_the_issue_cases_with_three_seeds():
    spec = budget_spec("medium")
    labels = [c.label for c in spec.cases]
    assert spec.seeds == [0, 1, 2]
    assert {
        "end_to_end",
        "B=2 equiprobable gamma=0.05",
        "B=3 equiprobable gamma=0.05",
        "B=4 equiprobable gamma=0.05",
        "B=3 equiprobable gamma=0",
        "B=3 uniform_log gamma=0",
    } <= set(labels)
    assert any("layers" in label for label in labels)


def fake_run(label, seed, fd, acc, mode="blockwise", num_blocks=3):
    return {
        "label": label,
        "seed": seed,
        "mode": mode,
        "num_blocks": num_blocks,
        "partition": "equiprobable",
        "overlap_gamma": 0.05,
        "layers": None,
        "steps_per_block": 10,
        "layer_updates": 120,
        "num_samples": 100,
        "wall_s": 1.0,
        "ema": {"fd": fd, "class_accuracy": acc},
        "raw": {"fd": fd + 1, "class_accuracy": acc - 0.1},
    }


def test_summary_of_a_partial_medium_run(tmp_path):
    runs = [fake_run("end_to_end", s, 20 + s, 0.7, mode="end_to_end", num_blocks=1) for s in (0, 1, 2)]
    runs += [fake_run("B=3 equiprobable gamma=0.05", s, 10 + s, 0.9) for s in (0, 1)]
    report = summarise(
        "medium",
        budget_spec("medium"),
        runs,
        {"num_samples": 100, "wall_s": 60.0, "fd_floor": 0.3, "classifier_test_accuracy": 0.98},
    )
    assert not report["complete"] and report["runs_done"] == 5 and report["runs_expected"] == 21
    e2e, b3 = report["results"]
    assert e2e["ema"]["fd"]["mean"] == pytest.approx(21.0) and e2e["raw"]["fd"]["mean"] == pytest.approx(22.0)
    assert b3["seeds"] == [0, 1] and b3["paper_fid"] == 37.20
    write_quality_doc(report, tmp_path / "q.md", tmp_path / "q.png", "dblocks bench quality --budget medium")
    text = (tmp_path / "q.md").read_text()
    assert "PARTIAL: 5 of 21" in text and "37.20 (Table 2)" in text and "beyond 2 SE" in text
    assert (tmp_path / "q.png").stat().st_size > 0


def test_difference_standard_error():
    a = {"mean": 10.0, "std": 2.0, "values": [8.0, 10.0, 12.0]}
    b = {"mean": 4.0, "std": 1.0, "values": [3.0, 4.0, 5.0]}
    diff, se = difference(a, b)
    assert diff == 6.0 and se == pytest.approx((4 / 3 + 1 / 3) ** 0.5)


@pytest.mark.parametrize("task", ["classification", "text"])
def test_task_comparisons_summarise_against_their_reference_case(task, tmp_path):
    from shared.tasks.bench import write_task_doc
    from shared.tasks.classification.bench import DOC as CLASSIFICATION_DOC
    from shared.tasks.text.bench import DOC as TEXT_DOC

    doc = {"classification": CLASSIFICATION_DOC, "text": TEXT_DOC}[task]
    quality = quality_of(task)
    spec = budget_spec("small", task)
    assert spec.seeds == [0, 1, 2] and len(spec.cases) == (3 if task == "classification" else 2)
    (key,) = quality.metrics[:1]
    runs = []
    for index, case in enumerate(spec.cases):
        for seed in spec.seeds:
            value = 0.9 + 0.01 * index + 0.001 * seed
            runs.append(
                {
                    "label": case.label,
                    "seed": seed,
                    "mode": "end_to_end" if "end_to_end" in case.overrides[0] else "blockwise",
                    "objective": "backprop" if case.label == "backprop" else "label_denoising",
                    "num_blocks": 1 if case.label in ("backprop", "end_to_end") else 3,
                    "partition": "equiprobable",
                    "overlap_gamma": 0.05,
                    "layers": None,
                    "steps_per_block": 1500,
                    "layer_updates": 9000,
                    "num_samples": 1000,
                    "wall_s": 1.0,
                    **{w: {k: value for k in quality.metrics} for w in ("ema", "raw")},
                }
            )
    report = summarise("small", spec, runs, {"task": task, "num_samples": 1000, "wall_s": 60.0})
    assert report["complete"] and [r[key]["mean"] for r in report["results"]] == pytest.approx(
        [0.901 + 0.01 * i for i in range(len(spec.cases))]
    )
    write_task_doc(doc, report, tmp_path / "q.md", f"dblocks bench quality --task {task} --json")
    text = (tmp_path / "q.md").read_text()
    reference = "backprop" if task == "classification" else "end-to-end"
    assert f"vs {reference}" in text and "+0.0100 ± 0.0008 (beyond 2 SE)" in text and "complete" in text
    assert text.count(f"vs {reference} (EMA)") == len(doc.compared)  # a column per compared metric
    quality.page(report, tmp_path, "the command")  # the page the benchmark writes, under the task's own name
    assert (tmp_path / doc.page_name).read_text().startswith(f"# Quality, {doc.title} (generated)")
    with pytest.raises(ValueError, match="budget must be small"):
        budget_spec("medium", task)
    if task == "text":  # runs from before a metric existed (the prefix BPC): summarised without it, a dash shown
        for run in runs[:2]:
            run["ema"].pop("bpc_prefix"), run["raw"].pop("bpc_prefix")
        report = summarise("small", spec, runs, {"task": task, "num_samples": 1000, "wall_s": 60.0})
        assert "bpc_prefix" not in report["results"][0]["ema"] and "bpc_prefix" in report["results"][1]["ema"]
        write_task_doc(doc, report, tmp_path / "q.md", "the command")
        assert "| — | — |" in (tmp_path / "q.md").read_text()


def test_a_run_recorded_under_another_config_is_not_reused():
    from benchmarks.quality import full_config_sha, recorded
    from shared.config import load_config
    from tests.conftest import TINY

    base, other = load_config(TINY), load_config(TINY, ["sample.cfg_scale=3.0"])
    assert full_config_sha(base) != full_config_sha(other) and base.hash() != other.hash()
    runs = [{"label": "end_to_end", "seed": 0, "config_sha": full_config_sha(base)}]
    assert recorded(runs, "end_to_end", 0, full_config_sha(base))
    assert not recorded(runs, "end_to_end", 0, full_config_sha(other)) and not recorded(runs, "end_to_end", 1, "x")
    assert recorded([{"label": "end_to_end", "seed": 0}], "end_to_end", 0, "any")  # older records are kept


def test_invocations_over_disjoint_seeds_merge_into_one_report(tmp_path):
    """Two `--seeds` invocations side by side: each save keeps the runs the other wrote meanwhile."""
    from benchmarks.quality import save_merged

    spec = budget_spec("medium")
    labels = [c.label for c in spec.cases]
    path = tmp_path / "quality-medium.json"
    base = {"task": "image_generation", "num_samples": 100, "num_steps": 50}

    def report(seed: int) -> dict:
        return summarise("medium", spec, [fake_run(label, seed, 10.0 + seed, 0.9) for label in labels], base)

    first = save_merged("medium", "image_generation", report(0), path)
    assert first["runs_done"] == len(labels) and not first["complete"]
    save_merged("medium", "image_generation", report(1), path)
    last = save_merged("medium", "image_generation", report(2), path)
    assert last["complete"] and last["runs_done"] == 3 * len(labels)
    assert last["results"][0]["seeds"] == [0, 1, 2] and last["results"][0]["ema"]["fd"]["mean"] == pytest.approx(11)
    assert last["wall_s"] == pytest.approx(3 * len(labels))  # the runs' own times, whoever wrote them
    redone = summarise("medium", spec, [fake_run(labels[0], 0, 99.0, 0.5)], base)
    merged = save_merged("medium", "image_generation", redone, path)  # a rerun of (case, seed) replaces the old one
    assert [r["ema"]["fd"] for r in merged["runs"] if r["label"] == labels[0] and r["seed"] == 0] == [99.0]


def test_recurrent_depths_cases_compare_equal_steps_and_equal_counted_flops(tmp_path):
    """The equal-FLOPs case's steps come from the counted FLOPs of both recipes; each run records its FLOPs and
    per-step memory, and the page answers both questions from the numbers."""
    from shared.tasks.recurrent_depth.bench import ITERATIONS, compute_fields

    quality, spec = quality_of("recurrent_depth"), budget_spec("small", "recurrent_depth")
    configs = {c.label: case_config(quality.default_config, spec, c, seed=0) for c in spec.cases}
    steps = {label: c.train.steps_per_block for label, c in configs.items()}
    assert steps["denoising"] == steps["truncated backprop"] == 4 * steps["denoising, 1/4 steps"]
    fields = {label: compute_fields(c) for label, c in configs.items()}
    assert 1 < steps["truncated backprop, equal FLOPs"] < steps["denoising"] / 3  # Huginn's step costs more
    per_step = fields["truncated backprop"]["flops_per_step"]
    gap = fields["truncated backprop, equal FLOPs"]["train_flops"] - fields["denoising"]["train_flops"]
    assert abs(gap) <= per_step / 2  # the nearest whole number of steps
    assert fields["truncated backprop"]["saved_activation_bytes"] > 3 * fields["denoising"]["saved_activation_bytes"]
    assert fields["truncated backprop"]["state_bytes"] == fields["denoising"]["state_bytes"]

    runs = []
    for index, (label, config) in enumerate(configs.items()):
        for seed in spec.seeds:
            mauve = 0.5 + 0.1 * index + 0.01 * seed if "backprop" in label else 0.9 + 0.01 * seed
            scores = {"mauve": mauve, "gen_ppl": 100.0, "tokens_per_s": 1000.0}
            runs.append({"label": label, "seed": seed, "mode": "blockwise", **fields[label], "num_blocks": 1,
                         "steps_per_block": steps[label], "num_samples": 1000, "wall_s": 1.0, "ema": scores,
                         "raw": scores, "by_steps": {str(k): scores for k in ITERATIONS}})  # fmt: skip
    report = summarise("small", spec, runs, {"task": "recurrent_depth", "num_samples": 1000, "reference_ppl": 20.0})
    row = {r["label"]: r for r in report["results"]}
    assert row["truncated backprop"]["train_flops"] == fields["truncated backprop"]["train_flops"]
    assert row["denoising"]["by_steps"]["64"]["mauve"]["mean"] == pytest.approx(0.91)
    quality.page(report, tmp_path, "the command")
    text = (tmp_path / "quality-recurrent-depth.md").read_text()
    assert "At equal training FLOPs" in text and "MAUVE +0.200 ± 0.008: denoising is better, beyond 2 SE" in text
    assert "| 64 |" in text and "Training FLOPs each recipe needs for MAUVE" in text


def test_the_classification_fidelity_budget_reads_both_grids_from_both_starts(tmp_path):
    """The fidelity budget compares the official output form with the first one, each read on both inference grids
    from both starts, on its own page."""
    quality, spec = quality_of("classification"), budget_spec("fidelity", "classification")
    assert [c.label for c in spec.cases] == ["B=3 features output", "B=3 skip output"] and spec.seeds == [0, 1, 2]
    outputs = {
        case.label: case_config(quality.default_config, spec, case, 0).classification.output for case in spec.cases
    }
    assert outputs == {"B=3 features output": "features", "B=3 skip output": "skip"}
    runs = []
    for index, case in enumerate(spec.cases):
        for seed in spec.seeds:
            scores = {key: 0.9 + 0.02 * index + 0.001 * seed for key in spec.metrics}
            scores["accuracy_official_zero"] += 0.01 + 0.001 * seed  # the zero start ahead on the official grid
            runs.append({**fake_run(case.label, seed, 0, 0), "ema": scores, "raw": scores})
    report = summarise("fidelity", spec, runs, {"task": "classification", "num_samples": 1000})
    quality.page(report, tmp_path, "the command")
    text = (tmp_path / "quality-classification-fidelity.md").read_text()
    assert "official grid, noise start" in text and "boundary grid, zero start" in text
    assert text.count("+0.0200 ± 0.0008 (beyond 2 SE)") == 3  # each accuracy against the features output
    # within each case, paired by seed: the zero start's lead on the official grid, none on the boundary grid
    assert text.count("| +0.0000 ± 0.0000 (within 2 SE) | +0.0110 ± 0.0006 (beyond 2 SE) | +0.0110 ± 0.0006 (beyond "
                      "2 SE) | +0.0000 ± 0.0000 (within 2 SE) |") == 2  # fmt: skip


def test_the_text_page_measures_each_issue_40_change_alone(tmp_path, monkeypatch):
    """The estimate's change on the same models (whole text - prefix, paired by seed) and the loss's change (the
    prefix estimate now against the report from before, both estimated the same way)."""
    import shared.tasks.text.bench as text_bench

    quality, spec = quality_of("text"), budget_spec("small", "text")
    runs, before = [], []
    for case in spec.cases:
        for seed in spec.seeds:
            now = {"bpc": 3.0 + 0.01 * seed, "bpc_prefix": 3.02 + 0.012 * seed}
            runs.append({**fake_run(case.label, seed, 0, 0), "ema": now, "raw": now})
            then = {"bpc": 3.1 + 0.01 * seed}
            before.append({**fake_run(case.label, seed, 0, 0), "ema": then, "raw": then})
    old = summarise("small", spec, before, {"task": "text", "num_samples": 1000})
    (tmp_path / "before.json").write_text(json.dumps(old))
    monkeypatch.setattr(text_bench, "BEFORE_40", tmp_path / "before.json")
    report = summarise("small", spec, runs, {"task": "text", "num_samples": 1000, "coverage": 1.0})
    quality.page(report, tmp_path, "the command")
    text = (tmp_path / "quality-text.md").read_text()
    assert text.count("| -0.0220 ± 0.0012 (beyond 2 SE) | -0.0780 ± 0.0090 (beyond 2 SE) |") == 2, text
