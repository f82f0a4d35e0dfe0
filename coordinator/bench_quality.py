"""`dblocks bench quality`: end-to-end vs DiffusionBlocks at equal layer-updates, evaluated offline.

Every case trains through the same coordinator/Ray path as `dblocks train` (end_to_end is the B = 1 plan), then
`coordinator.quality.evaluate_run` measures FD and class accuracy against the held-out test split.
Equal layer-updates: B blocks x K steps x L/B layers = K steps x L layers, so every case uses the same K.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.config import Config, load_config
from shared.visualize import figure

from coordinator.dispatch import RayDispatcher
from coordinator.quality import evaluate_run
from coordinator.runner import create_run
from coordinator.service import Coordinator
from coordinator.store import State, Store

# Paper, DiT-S/2 on CIFAR-10, test FID (for shape only: different data, model, and metric features).
PAPER = {"end_to_end": 39.83, "B=3 equiprobable gamma=0.05": 37.20, "B=3 uniform_log": 43.53,
         "B=3 equiprobable gamma=0": 38.03, "B=2 equiprobable gamma=0": 35.47, "B=4 equiprobable gamma=0": 45.43}


@dataclass(frozen=True)
class Case:
    label: str
    overrides: tuple[str, ...]


def cases(budget: str) -> tuple[list[Case], list[int], tuple[str, ...]]:
    """(cases, seeds, overrides common to every case) of a budget."""
    # end_to_end is one job: give it both CPUs the block-parallel cases use at once (equal resources).
    small = [Case("end_to_end", ("train.mode=end_to_end", "resources.cpus_per_block=2")),
             Case("B=3 equiprobable gamma=0.05", ("blocks.num_blocks=3",)),
             Case("B=3 uniform_log", ("blocks.num_blocks=3", "blocks.partition=uniform_log"))]
    if budget == "small":
        return small, [0], ("train.steps_per_block=2000",)
    if budget == "full":
        extra = [Case(f"B={b} equiprobable gamma=0.05", (f"blocks.num_blocks={b}",)) for b in (2, 4, 6)]
        extra += [Case(f"B=3 equiprobable gamma={g}", ("blocks.num_blocks=3", f"blocks.overlap_gamma={g}"))
                  for g in (0, 0.1)]
        extra += [Case("B=3 layers [2,4,6]", ("blocks.num_blocks=3", "blocks.layers=[2,4,6]"))]
        return small + extra, [0, 1, 2], ("model.num_layers=12", "train.steps_per_block=8000")
    raise ValueError(f"budget must be 'small' or 'full', got {budget!r}")


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def train_case(config: Config, run_id: str, run_dir: Path, *, store: Store, dispatcher: RayDispatcher,
               log: Callable[[str], None]) -> None:
    if not (run_dir / "manifest.json").exists():  # a finished case is reused when the bench is rerun
        if store.get_run(run_id) is None:
            create_run(config, store=store, run_id=run_id, run_dir=run_dir)
        coordinator = Coordinator(store=store, dispatcher=dispatcher, log=log, only_runs={run_id})
        state = coordinator.run_until_done(run_id)
        if state != State.SUCCEEDED:
            raise RuntimeError(f"{run_id}: {state}")


def bench_quality(budget: str, base_config: Path, out_dir: Path, *, store: Store, dispatcher: RayDispatcher,
                  cache_dir: Path, num_samples: int = 1000, log: Callable[[str], None] = print) -> dict:
    case_list, seeds, common = cases(budget)
    started = time.time()
    results = []
    for case in case_list:
        fds, accs = [], []
        for seed in seeds:
            config = load_config(base_config, [*common, *case.overrides, f"train.seed={seed}", "name=bench"])
            slug = f"{budget}-{case.label.replace(' ', '_').replace('=', '').replace(',', '-')}-seed{seed}"
            slug = "".join(c for c in slug if c.isalnum() or c in "_-.")
            run_id = f"bench-{slug}-{config.hash()[:8]}"
            run_dir = out_dir / run_id
            log(f"== {case.label}, seed {seed}: {run_dir}")
            train_case(config, run_id, run_dir, store=store, dispatcher=dispatcher, log=log)
            ev = evaluate_run(run_dir, config, num_samples=num_samples, seed=0, cache_dir=cache_dir)
            log(f"   FD {ev['fd']:.2f}  class accuracy {ev['class_accuracy']:.3f}")
            fds.append(ev["fd"])
            accs.append(ev["class_accuracy"])
        results.append({
            "label": case.label, "mode": config.train.mode,
            "num_blocks": 1 if config.train.mode == "end_to_end" else config.blocks.num_blocks,
            "partition": config.blocks.partition, "overlap_gamma": config.blocks.overlap_gamma,
            "layers": config.blocks.layers, "fd": mean_std(fds), "class_accuracy": mean_std(accs),
            "seeds": seeds, "steps_per_block": config.train.steps_per_block,
            "layer_updates": config.train.steps_per_block * config.model.num_layers,
            "paper_fid": PAPER.get(case.label),
        })
    return {"budget": budget, "num_samples": num_samples, "fd_floor": ev["fd_floor"], "wall_s": time.time() - started,
            "classifier_test_accuracy": ev["classifier_test_accuracy"], "results": results}


def write_quality_doc(report: dict, doc_path: Path, plot_path: Path, command: str) -> None:
    rows = ["| run | B | FD (mean ± std) | class accuracy | layer-updates | paper FID (CIFAR-10, shape only) |",
            "|---|---|---|---|---|---|"]
    for r in report["results"]:
        paper = f"{r['paper_fid']:.2f}" if r["paper_fid"] else "—"
        rows.append(f"| {r['label']} | {r['num_blocks']} | {r['fd']['mean']:.2f} ± {r['fd']['std']:.2f} | "
                    f"{r['class_accuracy']['mean']:.3f} ± {r['class_accuracy']['std']:.3f} | "
                    f"{r['layer_updates']:,} | {paper} |")
    _plot_fd_vs_blocks(report, plot_path)
    text = f"""# Quality: DiffusionBlocks vs end-to-end at equal layer-updates

Produced by `{command}` (budget `{report['budget']}`, seeds {report['results'][0]['seeds']},
{report['num_samples']} class-balanced samples per run, Euler 50 steps, CFG 2.0, EMA weights), in
{report.get('wall_s', float('nan')) / 60:.0f} minutes of wall time on the machine in `benchmarks/results/`.
FD is the Frechet distance in the features of a small CNN trained on the training split only (its held-out
accuracy: {report['classifier_test_accuracy']:.3f}); the floor, real training vs held-out test images, is
{report['fd_floor']:.2f}. Class accuracy is the fraction of samples that classifier recognises as the class they
were asked for. Differences in FD under ~10 are within seed noise at 1,000 samples (METHOD.md).

{chr(10).join(rows)}

![FD vs number of blocks]({plot_path.name})

The paper's column is DiT-S/2 on CIFAR-10 with Inception FID: compare the *shape* (block-wise matches or beats
end-to-end; equi-probability beats uniform), not the values.
"""
    doc_path.write_text(text)


def _plot_fd_vs_blocks(report: dict, path: Path) -> None:
    with figure(path, figsize=(5, 3.5), dpi=120) as (_, (ax,)):
        for r in report["results"]:
            marker = "s" if r["mode"] == "end_to_end" else ("o" if r["partition"] == "equiprobable" else "^")
            ax.errorbar(r["num_blocks"], r["fd"]["mean"], yerr=r["fd"]["std"], fmt=marker, capsize=3,
                        label=r["label"])
        ax.set_xlabel("number of blocks B (1 = end-to-end)")
        ax.set_ylabel("FD (classifier features)")
        ax.legend(fontsize=7)


def dump(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
