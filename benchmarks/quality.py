"""`dblocks bench quality`: end-to-end vs DiffusionBlocks at equal layer-updates, evaluated offline.

Every case trains through the same coordinator/Ray path as `dblocks train` (end_to_end is the B = 1 plan), then is
evaluated by its task against the held-out data (`Outputs.evaluate`: FD and class accuracy of samples for images,
accuracy and calibration error for classification, bits per character for text). What is compared, over which
cases, beside which paper numbers, and the page each task's comparison writes, are the task's
(`shared/tasks/<name>/bench.py`). Equal layer-updates: B blocks x K steps x L/B layers = K steps x L layers, so every
case uses the same K.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from coordinator.dispatch import RayDispatcher
from coordinator.runs import create_run
from coordinator.service import Coordinator
from coordinator.store import Store
from shared.config import EQUAL_STEPS, Config, load_config
from shared.plan import layer_updates
from shared.tasks import LEGACY_TASK, resolve_data
from shared.tasks.base import EvalOptions
from shared.tasks.bench import WEIGHTS, Budget, Case, QualityBench, mean_std
from shared.tasks.outputs import OUTPUTS

BUDGETS = tuple(dict.fromkeys(b for o in OUTPUTS.values() for b in o.quality.budgets))  # every task's
# The cases compare at equal steps per block, sampled as every benchmark so far (50 steps): a base config's own
# per-block budgets and sampler steps (the quickstart's) are dropped.
BENCH_BASE = (EQUAL_STEPS, "sample.num_steps=50")


def quality_of(task: str) -> QualityBench:
    if task not in OUTPUTS:
        raise ValueError(f"task must be one of {sorted(OUTPUTS)}, got {task!r}")
    return OUTPUTS[task].quality


def budget_spec(budget: str, task: str = LEGACY_TASK) -> Budget:
    """The cases, seeds and common overrides of a task's budget (costs on this project's 2-core CPU machine in
    docs/quality.md)."""
    return quality_of(task).budget(budget)


def case_config(base_config: str | Path, spec: Budget, case: Case, seed: int) -> Config:
    config = load_config(base_config, [*BENCH_BASE, *spec.common, *case.overrides, f"train.seed={seed}", "name=bench"])
    return config.with_overrides(list(case.derive(resolve_data(config)))) if case.derive else config


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


# What a case's row copies from its first run (the same for every seed), and what differs by seed.
CASE_KEYS = ("label", "mode", "objective", "num_blocks", "partition", "overlap_gamma", "layers", "steps_per_block",
             "layer_updates")  # fmt: skip
PER_RUN = {"seed", "config_sha", "num_samples", "wall_s", "by_steps", *WEIGHTS}


SUMMARY_KEYS = {"budget", "task", "num_samples", "num_steps", "runs", "results", "wall_s", "complete", "runs_done",
                "runs_expected"}  # fmt: skip


def extras(report: dict) -> dict:
    """A report's task fields (`QualityBench.report_fields`: e.g. the reference model's perplexity)."""
    return {key: value for key, value in report.items() if key not in SUMMARY_KEYS}


def summarise(budget: str, spec: Budget, runs: list[dict], base: dict) -> dict:
    """Per case: the task's metrics (FD and class accuracy; accuracy and ECE) over the seeds evaluated so far, raw
    and EMA."""
    quality = quality_of(base.get("task", LEGACY_TASK))  # reports written before tasks existed are image runs
    metrics = spec.metrics or quality.metrics
    results = []
    for case in spec.cases:
        done = sorted((r for r in runs if r["label"] == case.label), key=lambda r: r["seed"])
        if not done:
            continue
        first = done[0]
        row = {key: first.get(key) for key in CASE_KEYS} | {k: v for k, v in first.items() if k not in PER_RUN}
        row["seeds"] = [r["seed"] for r in done]
        measured = [key for key in metrics if all(key in r[which] for r in done for which in WEIGHTS)]
        for which in WEIGHTS:  # a metric some run predates is left out of the row (its page shows a dash)
            row[which] = {key: mean_std([r[which][key] for r in done]) for key in measured}
        row.update({key: row["ema"][key] for key in measured})  # the default weights
        curves = [r["by_steps"] for r in done if "by_steps" in r]
        if curves:  # each sampler-steps point over the seeds that have it
            row["by_steps"] = {k: {key: mean_std([c[k][key] for c in curves if k in c]) for key in metrics}
                               for k in curves[0]}  # fmt: skip
        paper = quality.paper.get(case.label)
        row[quality.paper_key], row["paper_setting"] = paper if paper else (None, None)
        results.append(row)
    expected = len(spec.cases) * len(spec.seeds)
    return {
        "budget": budget,
        **base,
        "runs": runs,
        "results": results,
        "wall_s": sum(r.get("wall_s", 0.0) for r in runs),
        "complete": len(runs) == expected,
        "runs_done": len(runs),
        "runs_expected": expected,
    }


def evaluate_case(
    task: str, run_dir: Path, config: Config, options: dict, metrics: tuple[str, ...], log: Callable[[str], None]
) -> tuple[dict, dict]:
    """A trained case's evaluations, raw and EMA weights, and its task's sampler-steps curve (EMA)."""
    quality, outputs = quality_of(task), OUTPUTS[task]
    evals = {which: outputs.evaluate(run_dir, config, EvalOptions(weights=which, **options)) for which in WEIGHTS}
    for which, ev in evals.items():
        log(f"   {which}: " + "  ".join(f"{key} {ev[key]:.4f}" for key in metrics))
    curve = {}
    for steps in quality.steps_curve:
        ev = outputs.evaluate(run_dir, config, EvalOptions(**{**options, "num_steps": steps}))
        curve[str(steps)] = {key: ev[key] for key in metrics}
        log(f"   {steps} steps: " + "  ".join(f"{key} {ev[key]:.4f}" for key in metrics))
    return evals, curve


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
    save: Callable[[dict], object] = lambda report: None,
    task: str = LEGACY_TASK,
    seeds: set[int] | None = None,
    cases: set[str] | None = None,
) -> dict:
    """Train and evaluate every (case, seed) of a budget, seed by seed, so partial results cover every case.

    Runs already in `previous` (the committed JSON of an earlier, interrupted invocation) are kept, not redone;
    `save` gets the report after every run, so an interruption loses at most one run. `seeds` and `cases` (labels)
    restrict this invocation to part of the budget: invocations over disjoint parts may run side by side into one
    file (`save_merged`).
    """
    quality = quality_of(task)
    spec = quality.budget(budget)
    metrics = spec.metrics or quality.metrics
    num_samples = num_samples or spec.num_samples
    runs = [r for r in (previous or {}).get("runs", []) if r.get("num_samples") == num_samples]
    base = {"task": task, "num_samples": num_samples, "num_steps": spec.num_steps or 50}
    base |= extras(previous or {})
    for seed in spec.seeds:
        if seeds is not None and seed not in seeds:
            continue
        for case in spec.cases:
            if cases is not None and case.label not in cases:
                continue
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
            resolved = resolve_data(config)  # its data facts (a trained tokenizer); the sha stays the case's own
            train_case(resolved, run_id, run_dir, store=store, dispatcher=dispatcher, log=log)
            options = {"num_samples": num_samples, "seed": 0, "cache_dir": cache_dir, "num_steps": spec.num_steps}
            evals, curve = evaluate_case(task, run_dir, resolved, options, metrics, log)
            base.update(quality.report_fields(config, evals["ema"]))
            runs.append(
                {
                    "label": case.label,
                    "seed": seed,
                    "config_sha": sha,
                    "mode": config.train.mode,
                    **quality.run_fields(config),
                    "num_blocks": config.planned_blocks,
                    "partition": config.blocks.partition,
                    "overlap_gamma": config.blocks.overlap_gamma,
                    "layers": config.blocks.layers,
                    "steps_per_block": config.train.steps_per_block,
                    "layer_updates": layer_updates(config),
                    "num_samples": num_samples,
                    "wall_s": time.time() - started,
                    **{which: {key: e[key] for key in metrics} for which, e in evals.items()},
                    **({"by_steps": curve} if curve else {}),
                }
            )
            save(summarise(budget, spec, runs, base))
    return summarise(budget, spec, runs, base)


def merge(budget: str, task: str, ours: dict, theirs: dict | None) -> dict:
    """`ours` with the runs of `theirs` (the file as another invocation left it) that ours lacks."""
    if theirs is None:
        return ours
    have = {(r["label"], r["seed"]) for r in ours["runs"]}
    extra = [r for r in theirs.get("runs", []) if (r["label"], r["seed"]) not in have
             and r.get("num_samples") == ours["num_samples"]]  # fmt: skip
    base = extras(theirs) | {key: ours[key] for key in ("task", "num_samples", "num_steps")} | extras(ours)
    return summarise(budget, budget_spec(budget, task), ours["runs"] + extra, base)


def save_merged(budget: str, task: str, report: dict, path: Path) -> dict:
    """Write `report` to `path`, keeping the runs another invocation wrote there meanwhile (under a file lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = merge(budget, task, report, json.loads(path.read_text()) if path.is_file() else None)
        dump(merged, path)
    return merged


def dump(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
