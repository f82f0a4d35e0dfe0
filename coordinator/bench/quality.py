"""`dblocks bench quality`: end-to-end vs DiffusionBlocks at equal layer-updates, evaluated offline.

Every case trains through the same coordinator/Ray path as `dblocks train` (end_to_end is the B = 1 plan), then is
evaluated against the held-out test split: image generation by FD and class accuracy of samples
(`shared.tasks.image_generation.evaluation.evaluate_run`), classification by accuracy and calibration error
(`shared.tasks.classification.outputs.evaluate_classifier`; the backprop baseline is the same network trained as an
ordinary classifier). Equal layer-updates: B blocks x K steps x L/B layers = K steps x L layers, so every case uses
the same K.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coordinator.dispatch import RayDispatcher
from coordinator.runs import create_run
from coordinator.service import Coordinator
from coordinator.store import Store
from shared.config import EQUAL_STEPS, Config, load_config
from shared.plan import layer_updates
from shared.tasks.classification.outputs import evaluate_classifier
from shared.tasks.image_generation.evaluation import evaluate_run
from shared.tasks.text.outputs import evaluate_text
from shared.visualize import figure

# Paper (DiT-S/2, CIFAR-10, test FID; shape only: other data, model and metric features). Table 2 compares
# end-to-end with B=3 at gamma 0.05; the partition and block-count ablations (Table 7) ran at gamma 0.
PAPER = {
    "end_to_end": (39.83, "Table 2"),
    "B=3 equiprobable gamma=0.05": (37.20, "Table 2"),
    "B=3 equiprobable gamma=0": (38.03, "Table 7, gamma 0"),
    "B=3 uniform_log gamma=0": (43.53, "Table 7, gamma 0"),
    "B=2 equiprobable gamma=0.05": (35.47, "Table 7 at gamma 0"),
    "B=4 equiprobable gamma=0.05": (45.43, "Table 7 at gamma 0"),
}
# Paper Table 1 (ViT, test accuracy %; shape only: CIFAR-100 there, 4,000 MNIST digits here).
PAPER_CLASSIFICATION = {
    "backprop": (60.25, "Table 1, CIFAR-100"),
    "B=3 equiprobable gamma=0.05": (59.30, "Table 1, CIFAR-100"),
}
WEIGHTS = ("ema", "raw")
# The metrics each task's cases are compared by; the first is the headline.
METRICS = {
    "image_generation": ("fd", "class_accuracy"),
    "classification": ("accuracy", "ece", "accuracy_zero_start"),
    "text": ("bpc",),
}
DEFAULT_CONFIGS = {
    "image_generation": "configs/quickstart.yaml",
    "classification": "configs/classify.yaml",
    "text": "configs/text.yaml",
}
# Paper Table 3 (MD4 on text8, 12 layers, test BPC; shape only: a small model on Python's documentation here).
PAPER_TEXT = {"end_to_end": (1.56, "Table 3, text8"), "B=3 equiprobable gamma=0.05": (1.45, "Table 3, text8")}


@dataclass(frozen=True)
class Case:
    label: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Budget:
    cases: list[Case]
    seeds: list[int]
    common: tuple[str, ...]  # overrides shared by every case
    num_samples: int = 1000  # evaluated samples per run and weights
    num_steps: int | None = None  # sampler steps for the evaluation (None: the config's, 50)


# end_to_end is one job on one CPU, as each block is. Quality is compared at equal layer-updates, not equal wall
# time; and with 2 torch threads under Ray on this 2-core machine it ran at 0.8 steps/s (OpenMP threads spinning
# against Ray's helper processes) against ~2.3 for one thread.
END_TO_END = Case("end_to_end", ("train.mode=end_to_end",))


def _equi(num_blocks: int, gamma: float) -> Case:
    return Case(
        f"B={num_blocks} equiprobable gamma={gamma:g}",
        (f"blocks.num_blocks={num_blocks}", f"blocks.overlap_gamma={gamma}"),
    )


BACKPROP = Case("backprop", ("train.mode=end_to_end", "classification.objective=backprop"))


def budget_spec(budget: str, task: str = "image_generation") -> Budget:
    """The cases, seeds and common overrides of a budget (costs on this project's 2-core CPU machine in
    docs/quality.md)."""
    if task in ("classification", "text"):
        if budget != "small":
            raise ValueError(f"budget must be small for the {task} task, got {budget!r}")
        # At equal layer-updates, 3 seeds, on the task's own example config (its steps).
        if task == "classification":  # 12 layers: 4 per block (2-layer blocks read the image too weakly)
            return Budget([BACKPROP, END_TO_END, _equi(3, 0.05)], [0, 1, 2], ("model.num_layers=12",))
        return Budget([END_TO_END, _equi(3, 0.05)], [0, 1, 2], ())
    if budget == "small":  # ~30 min: the quickstart model, one seed
        return Budget(
            [
                END_TO_END,
                _equi(3, 0.05),
                Case("B=3 uniform_log", ("blocks.num_blocks=3", "blocks.partition=uniform_log")),
            ],
            [0],
            ("train.steps_per_block=2000",),
        )
    if budget == "medium":  # <= 2.5 h: the paper's Tables 2 and 7 in shape, 3 seeds; 12 layers so B=4 divides
        medium = [
            END_TO_END,
            _equi(2, 0.05),
            _equi(3, 0.05),
            _equi(4, 0.05),
            _equi(3, 0),
            Case(
                "B=3 uniform_log gamma=0",
                ("blocks.num_blocks=3", "blocks.partition=uniform_log", "blocks.overlap_gamma=0"),
            ),
            Case("B=3 layers [2,4,6] gamma=0.05", ("blocks.num_blocks=3", "blocks.layers=[2,4,6]")),
        ]
        # Evaluation at 500 samples and 32 Euler steps: sampling 1,000 x 50 steps through the 12-layer end-to-end
        # network took ~7 min per weights file here, more than its training.
        return Budget(
            medium,
            [0, 1, 2],
            ("model.num_layers=12", "model.hidden_size=48", "train.batch_size=64", "train.steps_per_block=800"),
            num_samples=500,
            num_steps=32,
        )
    if budget == "long":  # does block-wise still win once end-to-end is good? 3x the small budget's steps
        return Budget([END_TO_END, _equi(3, 0.05)], [0], ("train.steps_per_block=6000",))
    if budget == "full":
        extra = [_equi(b, 0.05) for b in (2, 4, 6)] + [_equi(3, g) for g in (0, 0.1)]
        extra += [Case("B=3 layers [2,4,6] gamma=0.05", ("blocks.num_blocks=3", "blocks.layers=[2,4,6]"))]
        return Budget(
            [
                END_TO_END,
                _equi(3, 0.05),
                Case("B=3 uniform_log", ("blocks.num_blocks=3", "blocks.partition=uniform_log")),
                *extra,
            ],
            [0, 1, 2],
            ("model.num_layers=12", "train.steps_per_block=8000"),
        )
    raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")


BUDGETS = ("small", "medium", "long", "full")
# The cases compare at equal steps per block, sampled as every benchmark so far (50 steps): a base config's own
# per-block budgets and sampler steps (the quickstart's) are dropped.
BENCH_BASE = (EQUAL_STEPS, "sample.num_steps=50")


def case_config(base_config: str | Path, spec: Budget, case: Case, seed: int) -> Config:
    return load_config(base_config, [*BENCH_BASE, *spec.common, *case.overrides, f"train.seed={seed}", "name=bench"])


def mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def train_case(
    config: Config, run_id: str, run_dir: Path, *, store: Store, dispatcher: RayDispatcher, log: Callable[[str], None]
) -> None:
    if not (run_dir / "manifest.json").exists():  # a finished case is reused when the bench is rerun
        if store.get_run(run_id) is None:
            create_run(config, store=store, run_id=run_id, run_dir=run_dir)
        coordinator = Coordinator(store=store, dispatcher=dispatcher, log=log, only_runs={run_id})
        coordinator.run_until_done(run_id, require_success=True)


def full_config_sha(config: Config) -> str:
    """sha256 of the whole config, defaults included. `Config.hash` leaves defaults out (so a new optional field
    changes no run's hash), which also means a *changed default* keeps the hash: a benchmark must not reuse a run
    trained under an older default, so its run ids and records carry this one."""
    return hashlib.sha256(config.to_yaml().encode()).hexdigest()


def recorded(runs: list[dict], label: str, seed: int, sha: str) -> bool:
    """Whether `runs` already holds (label, seed) trained under this exact config (records written before
    `config_sha` existed count)."""
    return any(r["label"] == label and r["seed"] == seed and r.get("config_sha", sha) == sha for r in runs)


def _run_id(budget: str, case: Case, seed: int, config: Config) -> str:
    slug = f"{budget}-{case.label.replace(' ', '_').replace('=', '').replace(',', '-')}-seed{seed}"
    slug = "".join(c for c in slug if c.isalnum() or c in "_-.")
    return f"bench-{slug}-{full_config_sha(config)[:8]}"


def summarise(budget: str, spec: Budget, runs: list[dict], base: dict) -> dict:
    """Per case: the task's metrics (FD and class accuracy; accuracy and ECE) over the seeds evaluated so far, raw
    and EMA."""
    task = base.get("task", "image_generation")
    metrics = METRICS[task]
    paper_table = {"classification": PAPER_CLASSIFICATION, "text": PAPER_TEXT}.get(task, PAPER)
    results = []
    for case in spec.cases:
        done = [r for r in runs if r["label"] == case.label]
        if not done:
            continue
        first = done[0]
        row = {
            key: first.get(key)
            for key in (
                "label",
                "mode",
                "objective",
                "num_blocks",
                "partition",
                "overlap_gamma",
                "layers",
                "steps_per_block",
                "layer_updates",
            )
        }
        row["seeds"] = [r["seed"] for r in done]
        for which in WEIGHTS:
            row[which] = {key: mean_std([r[which][key] for r in done]) for key in metrics}
        row.update({key: row["ema"][key] for key in metrics})  # the default weights
        paper = paper_table.get(case.label)
        paper_key = "paper_accuracy" if task == "classification" else "paper_fid"
        row[paper_key], row["paper_setting"] = paper if paper else (None, None)
        results.append(row)
    expected = len(spec.cases) * len(spec.seeds)
    return {
        "budget": budget,
        **base,
        "runs": runs,
        "results": results,
        "complete": len(runs) == expected,
        "runs_done": len(runs),
        "runs_expected": expected,
    }


def bench_quality(
    budget: str,
    base_config: Path,
    out_dir: Path,
    *,
    store: Store,
    dispatcher: RayDispatcher,
    cache_dir: Path,
    num_samples: int | None = None,
    log: Callable[[str], None] = print,
    previous: dict | None = None,
    save: Callable[[dict], None] = lambda report: None,
    task: str = "image_generation",
) -> dict:
    """Train and evaluate every (case, seed) of a budget, seed by seed, so partial results cover every case.

    Runs already in `previous` (the committed JSON of an earlier, interrupted invocation) are kept, not redone;
    `save` gets the report after every run, so an interruption loses at most one run.
    """
    spec = budget_spec(budget, task)
    num_samples = num_samples or spec.num_samples
    runs = [r for r in (previous or {}).get("runs", []) if r.get("num_samples") == num_samples]
    base = {
        "task": task,
        "num_samples": num_samples,
        "num_steps": spec.num_steps or 50,
        "wall_s": (previous or {}).get("wall_s", 0.0),
    }
    for seed in spec.seeds:
        for case in spec.cases:
            config = case_config(base_config, spec, case, seed)
            sha = full_config_sha(config)
            if recorded(runs, case.label, seed, sha):
                continue
            runs = [r for r in runs if not (r["label"] == case.label and r["seed"] == seed)]  # stale: redo
            started = time.time()
            if config.task != task:
                raise ValueError(f"{base_config} is a {config.task} config; --task {task} needs a {task} config")
            run_id = _run_id(budget, case, seed, config)
            run_dir = out_dir / run_id
            log(f"== {case.label}, seed {seed}: {run_dir}")
            train_case(config, run_id, run_dir, store=store, dispatcher=dispatcher, log=log)
            if task == "classification":
                evals = {which: evaluate_classifier(run_dir, config, weights=which) for which in WEIGHTS}
                base.update(num_test_examples=evals["ema"]["num_examples"])
            elif task == "text":
                evals = {which: evaluate_text(run_dir, config, weights=which) for which in WEIGHTS}
                base.update(unigram_bpc=evals["ema"]["unigram_bpc"], seq_len=config.text.seq_len)
            else:
                evals = {
                    which: evaluate_run(
                        run_dir,
                        config,
                        num_samples=num_samples,
                        seed=0,
                        cache_dir=cache_dir,
                        weights=which,
                        num_steps=spec.num_steps,
                    )
                    for which in WEIGHTS
                }
                ev = evals["ema"]
                base.update(fd_floor=ev["fd_floor"], classifier_test_accuracy=ev["classifier_test_accuracy"])
            for which, ev in evals.items():
                log(f"   {which}: " + "  ".join(f"{key} {ev[key]:.4f}" for key in METRICS[task]))
            base["wall_s"] += time.time() - started
            runs.append(
                {
                    "label": case.label,
                    "seed": seed,
                    "config_sha": sha,
                    "mode": config.train.mode,
                    "objective": config.classification.objective if task == "classification" else None,
                    "num_blocks": config.planned_blocks,
                    "partition": config.blocks.partition,
                    "overlap_gamma": config.blocks.overlap_gamma,
                    "layers": config.blocks.layers,
                    "steps_per_block": config.train.steps_per_block,
                    "layer_updates": layer_updates(config),
                    "num_samples": num_samples,
                    "wall_s": time.time() - started,
                    **{which: {key: e[key] for key in METRICS[task]} for which, e in evals.items()},
                }
            )
            save(summarise(budget, spec, runs, base))
    return summarise(budget, spec, runs, base)


def difference(a: dict, b: dict) -> tuple[float, float]:
    """(mean_a - mean_b, its standard error) from two `mean_std` records (0 spread with a single seed)."""
    na, nb = len(a["values"]), len(b["values"])
    return a["mean"] - b["mean"], math.sqrt(a["std"] ** 2 / na + b["std"] ** 2 / nb)


def _vs(row: dict, ref: dict | None, key: str, digits: int = 2) -> str:
    if ref is None or ref is row:
        return "—"
    diff, se = difference(row["ema"][key], ref["ema"][key])
    if len(row["seeds"]) < 2 or len(ref["seeds"]) < 2:
        return f"{diff:+.{digits}f} (1 seed: no spread)"
    verdict = "beyond 2 SE" if abs(diff) > 2 * se else "within 2 SE"
    return f"{diff:+.{digits}f} ± {se:.{digits}f} ({verdict})"


def _completion(report: dict) -> str:
    """How far a generated page's benchmark got: complete, or how many runs and how to continue."""
    if report["complete"]:
        return "complete"
    return (
        f"PARTIAL: {report['runs_done']} of {report['runs_expected']} runs so far; rerunning the command "
        "continues from the committed JSON"
    )


def write_quality_doc(report: dict, doc_path: Path, plot_path: Path, command: str) -> None:
    """A generated page per budget: EMA and raw weights, the paper beside, differences with their uncertainty."""
    results = report["results"]
    e2e = next((r for r in results if r["mode"] == "end_to_end"), None)
    rows = [
        "| run | B | seeds | FD EMA | FD raw | accuracy EMA | accuracy raw | FD vs end-to-end (EMA) | "
        "paper FID (setting) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        paper = f"{r['paper_fid']:.2f} ({r['paper_setting']})" if r["paper_fid"] else "—"
        cells = [
            f"{r[w][k]['mean']:.{p}f} ± {r[w][k]['std']:.{p}f}"
            for k, p in (("fd", 2), ("class_accuracy", 3))
            for w in WEIGHTS
        ]
        rows.append(
            f"| {r['label']} | {r['num_blocks']} | {len(r['seeds'])} | {' | '.join(cells)} | "
            f"{_vs(r, e2e, 'fd')} | {paper} |"
        )
    _plot_fd_vs_blocks(report, plot_path)
    status = _completion(report)
    text = f"""# Quality, budget `{report["budget"]}` (generated)

Produced by `{command}` ({status}); {report["num_samples"]} class-balanced samples per run and weights, Euler
{report.get("num_steps", 50)} steps (Karras spacing), CFG 2.0; {report.get("wall_s", 0.0) / 60:.0f} minutes of wall time
on this project's 2-core CPU machine.
Every case trains at the same layer-updates ({results[0]["layer_updates"]:,} per case). FD: Frechet distance in
the features of a small CNN trained on the training split only (held-out accuracy
{report["classifier_test_accuracy"]:.3f}; floor, real train vs held-out: {report["fd_floor"]:.2f}). Class
accuracy: the fraction of samples that classifier recognises as the class they were asked for. Values are mean ±
standard deviation over seeds; "vs end-to-end" is the difference of means ± its standard error, and says whether it
exceeds twice that (a rough two-sided 95 % bar with 3 seeds; with 3 seeds a standard deviation is itself uncertain).

{chr(10).join(rows)}

![FD vs number of blocks]({plot_path.name})

The paper's column is DiT-S/2 on CIFAR-10 with Inception FID: compare the *shape* (which setting wins), not the
values. Its partition and block-count ablations ran at gamma 0; where our row is at gamma 0.05 the setting says so.
"""
    doc_path.write_text(text)


@dataclass(frozen=True)
class TaskDoc:
    """What the generated page of a non-image task's comparison says."""

    title: str
    metrics: tuple[tuple[str, str], ...]  # (key, column name)
    compared: tuple[str, ...]  # the metrics compared with the reference case, each in its own column
    reference: Callable[[dict], bool]  # which result row the others are compared with
    reference_name: str
    intro: str  # after the common first paragraph
    paper_note: str


TASK_DOCS = {
    "classification": TaskDoc(
        title="classification by label denoising",
        metrics=(("accuracy", "accuracy"), ("ece", "ECE"), ("accuracy_zero_start", "accuracy, zero start")),
        compared=("accuracy", "accuracy_zero_start"),
        reference=lambda r: r.get("objective") == "backprop",
        reference_name="backprop",
        intro="""Base config `configs/classify.yaml` with 12 layers (width 64, patch 4, 1,500 steps per block, batch
128, training noise log-normal at p_mean 0.8, p_std 1.2: docs/tasks.md, "The noise"). Accuracy and expected
calibration error (15 bins) on the held-out MNIST digits; inference for label denoising is one call per block (B
Euler steps at the plan's boundaries). "accuracy" starts the chain from noise (the paper's, `classification.start:
noise`), which draws the label from the model's posterior; "accuracy, zero start" follows the most probable label
(`classification.start: zero`; docs/tasks.md). The backprop baseline sees no noise: both starts give it the same
accuracy.

- **backprop**: the same network (`LabelDenoiserNet`) trained end to end as an ordinary classifier: the label token
  carries zeros, the noise conditioning is constant, plain cross-entropy (`classification.objective: backprop`).
- **end_to_end**: label denoising with one block owning the whole noise range (the B = 1 plan).
- **B=3**: DiffusionBlocks, three blocks of four layers trained independently, gamma 0.05.""",
        paper_note="The paper's column is a ViT on CIFAR-100 (Table 1, accuracy %): compare the *shape* (block-wise "
        "within about a point of backprop), not the values.",
    ),
    "text": TaskDoc(
        title="masked-diffusion text (MD4), bits per character",
        metrics=(("bpc", "BPC"),),
        compared=("bpc",),
        reference=lambda r: r.get("mode") == "end_to_end",
        reference_name="end-to-end",
        intro="""Base config `configs/text.yaml` (12 layers, width 64, sequences of 64 characters, text8 vocabulary,
1,500 steps per block, batch 64, trained on the masked mean cross-entropy) on the built-in corpus (Python's
documentation text, docs/data.md). BPC: the Monte-Carlo ELBO bound on the test chunk, each t routed to its block,
sampled until its standard error is at most 0.01; lower is better. The unigram floor (a model that ignores
context) is in the JSON (`unigram_bpc`).

- **end_to_end**: one network, all layers, t over [0, 1] (the B = 1 plan), an ordinary MD4 model.
- **B=3**: DiffusionBlocks, three blocks of four layers, each owning a third of t, gamma 0.05.""",
        paper_note="The paper's column is a 12-layer model on text8 (Table 3: 1.56 end-to-end vs 1.45 block-wise): "
        "compare the *shape* (which wins), not the values.",
    ),
}


def write_task_doc(report: dict, doc_path: Path, command: str) -> None:
    """The generated page of `dblocks bench quality --task classification|text`: the task's metrics, raw and EMA,
    each case against the task's reference case, the paper beside."""
    doc, results = TASK_DOCS[report["task"]], report["results"]
    reference = next((r for r in results if doc.reference(r)), None)
    column = dict(doc.metrics)
    names = [f"{name} {w.upper() if w == 'ema' else w}" for _, name in doc.metrics for w in WEIGHTS]
    names += [f"{column[key]} vs {doc.reference_name} (EMA)" for key in doc.compared]
    rows = [f"| run | B | seeds | {' | '.join(names)} | paper |", "|---|---|---|" + "---|" * len(names) + "---|"]
    for r in results:
        paper_value = r.get("paper_accuracy", r.get("paper_fid"))
        paper = f"{paper_value:.2f} ({r['paper_setting']})" if paper_value else "—"
        cells = [f"{r[w][k]['mean']:.4f} ± {r[w][k]['std']:.4f}" for k, _ in doc.metrics for w in WEIGHTS]
        cells += [_vs(r, reference, key, digits=4) for key in doc.compared]
        rows.append(f"| {r['label']} | {r['num_blocks']} | {len(r['seeds'])} | {' | '.join(cells)} | {paper} |")
    status = _completion(report)
    text = f"""# Quality, {doc.title} (generated)

Produced by `{command}` ({status}); {report.get("wall_s", 0.0) / 60:.0f} minutes of wall time on this
project's 2-core CPU machine. Every case trains through the coordinator and Ray at the same layer-updates
({results[0]["layer_updates"]:,} per case). Values are mean ± standard deviation over seeds; "vs {doc.reference_name}"
is the difference of means ± its standard error, and says whether it exceeds twice that.

{doc.intro}

{chr(10).join(rows)}

{doc.paper_note}
"""
    doc_path.write_text(text)


def _plot_fd_vs_blocks(report: dict, path: Path) -> None:
    with figure(path, figsize=(5, 3.5), dpi=120) as (_, (ax,)):
        for r in report["results"]:
            marker = "s" if r["mode"] == "end_to_end" else ("o" if r["partition"] == "equiprobable" else "^")
            ax.errorbar(
                r["num_blocks"],
                r["ema"]["fd"]["mean"],
                yerr=r["ema"]["fd"]["std"],
                fmt=marker,
                capsize=3,
                label=r["label"],
            )
        ax.set_xlabel("number of blocks B (1 = end-to-end)")
        ax.set_ylabel("FD, EMA weights (mean ± std over seeds)")
        ax.legend(fontsize=7)


def dump(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
