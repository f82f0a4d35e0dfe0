"""What a task tells the quality benchmark (`dblocks bench quality`, benchmarks/quality.py), and the
benchmark's vocabulary: a case (a label and config overrides), a budget (cases, seeds, overrides common to every
case, evaluation size), the statistics of a comparison over seeds, and the generated page of a task's comparison.
Each task's own cases, metrics, paper numbers and page live in its folder (`shared/tasks/<name>/bench.py`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Config

WEIGHTS = ("ema", "raw")


@dataclass(frozen=True)
class Case:
    label: str
    overrides: tuple[str, ...]
    # Overrides computed from the case's resolved config (e.g. the steps that match another case's compute), applied
    # after `overrides`.
    derive: Callable[[Config], tuple[str, ...]] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Budget:
    cases: list[Case]
    seeds: list[int]
    common: tuple[str, ...]  # overrides shared by every case
    num_samples: int = 1000  # evaluated samples per run and weights
    num_steps: int | None = None  # sampler steps for the evaluation (None: the config's, 50)
    metrics: tuple[str, ...] | None = None  # what this budget's cases are compared by (None: the task's)


# end_to_end is one job on one CPU, as each block is. Quality is compared at equal layer-updates, not equal wall
# time; and with 2 torch threads under Ray on this 2-core machine it ran at 0.8 steps/s (OpenMP threads spinning
# against Ray's helper processes) against ~2.3 for one thread.
END_TO_END = Case("end_to_end", ("train.mode=end_to_end",))


def equiprobable(num_blocks: int, gamma: float) -> Case:
    return Case(
        f"B={num_blocks} equiprobable gamma={gamma:g}",
        (f"blocks.num_blocks={num_blocks}", f"blocks.overlap_gamma={gamma}"),
    )


@dataclass(frozen=True, kw_only=True)
class QualityBench:
    """A task's part of the quality benchmark."""

    default_config: str  # the example config the cases vary
    metrics: tuple[str, ...]  # what the cases are compared by; the first is the headline
    budgets: dict[str, Budget]
    paper: dict[str, tuple[float, str]]  # the paper's number per case label, with its table
    paper_key: str  # the result key the paper's number is reported under
    results_stem: str  # the JSON is benchmarks/results/<stem>-<budget>.json
    command: str  # the command that regenerates it (`{budget}`: the budget)
    page: Callable[[dict, Path, str], None]  # writes the generated page(s) into a folder: (report, folder, command)
    run_fields: Callable[[Config], dict] = field(default=lambda config: {})  # recorded with each run
    # Sampler steps each run is also evaluated at (EMA weights, the budget's samples): quality as a function of the
    # sampler's steps (recurrent depth: core iterations per token), recorded per run as `by_steps`.
    steps_curve: tuple[int, ...] = ()
    report_fields: Callable[[Config, dict], dict] = field(default=lambda config, result: {})  # from an EMA eval

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ValueError(f"budget must be {' or '.join(self.budgets)} for this task, got {name!r}")
        return self.budgets[name]


def mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def difference(a: dict, b: dict) -> tuple[float, float]:
    """(mean_a - mean_b, its standard error) from two `mean_std` records (0 spread with a single seed)."""
    na, nb = len(a["values"]), len(b["values"])
    return a["mean"] - b["mean"], math.sqrt(a["std"] ** 2 / na + b["std"] ** 2 / nb)


def paired(deltas: list[float]) -> str:
    """Mean ± standard error of per-seed differences (the same runs read two ways), and whether the mean exceeds
    twice it."""
    if len(deltas) < 2:
        return f"{statistics.fmean(deltas):+.4f} (1 seed: no spread)" if deltas else "—"
    mean, se = statistics.fmean(deltas), statistics.stdev(deltas) / math.sqrt(len(deltas))
    return f"{mean:+.4f} ± {se:.4f} ({'beyond' if abs(mean) > 2 * se else 'within'} 2 SE)"


def versus(row: dict, ref: dict | None, key: str, digits: int = 2) -> str:
    """`row`'s EMA `key` minus the reference's, with its standard error and whether it exceeds twice that."""
    if ref is None or ref is row:
        return "—"
    diff, se = difference(row["ema"][key], ref["ema"][key])
    if len(row["seeds"]) < 2 or len(ref["seeds"]) < 2:
        return f"{diff:+.{digits}f} (1 seed: no spread)"
    verdict = "beyond 2 SE" if abs(diff) > 2 * se else "within 2 SE"
    return f"{diff:+.{digits}f} ± {se:.{digits}f} ({verdict})"


def completion(report: dict) -> str:
    """How far a generated page's benchmark got: complete, or how many runs and how to continue."""
    if report["complete"]:
        return "complete"
    return (
        f"PARTIAL: {report['runs_done']} of {report['runs_expected']} runs so far; rerunning the command "
        "continues from the committed JSON"
    )


@dataclass(frozen=True)
class TaskDoc:
    """What the generated page of a task's comparison with a reference case says."""

    title: str
    page_name: str  # the page's file name in the docs folder
    metrics: tuple[tuple[str, str], ...]  # (key, column name)
    compared: tuple[str, ...]  # the metrics compared with the reference case, each in its own column
    reference: Callable[[dict], bool]  # which result row the others are compared with
    reference_name: str
    intro: str  # after the common first paragraph
    paper_note: str
    # How the report's numbers were produced where that changed over time (grid, start, weighting), from the report
    provenance: Callable[[dict], str] = field(default=lambda report: "")


def cell(value: dict | None) -> str:
    """A metric's mean ± std over seeds; a dash where the report predates the metric."""
    return "—" if value is None else f"{value['mean']:.4f} ± {value['std']:.4f}"


def write_task_doc(doc: TaskDoc, report: dict, doc_path: Path, command: str) -> None:
    """A task's generated page: its metrics, raw and EMA, each case against the reference case, the paper beside."""
    results = report["results"]
    reference = next((r for r in results if doc.reference(r)), None)
    column = dict(doc.metrics)
    names = [f"{name} {w.upper() if w == 'ema' else w}" for _, name in doc.metrics for w in WEIGHTS]
    names += [f"{column[key]} vs {doc.reference_name} (EMA)" for key in doc.compared]
    rows = [f"| run | B | seeds | {' | '.join(names)} | paper |", "|---|---|---|" + "---|" * len(names) + "---|"]
    for r in results:
        paper_value = r.get("paper_accuracy", r.get("paper_fid"))
        paper = f"{paper_value:.2f} ({r['paper_setting']})" if paper_value else "—"
        cells = [cell(r[w].get(k)) for k, _ in doc.metrics for w in WEIGHTS]
        cells += [versus(r, reference, key, digits=4) for key in doc.compared]
        rows.append(f"| {r['label']} | {r['num_blocks']} | {len(r['seeds'])} | {' | '.join(cells)} | {paper} |")
    text = f"""# Quality, {doc.title} (generated)

Produced by `{command}` ({completion(report)}); {report.get("wall_s", 0.0) / 60:.0f} minutes of wall time on this
project's 2-core CPU machine. Every case trains through the coordinator and Ray at the same layer-updates
({results[0]["layer_updates"]:,} per case). Values are mean ± standard deviation over seeds; "vs {doc.reference_name}"
is the difference of means ± its standard error, and says whether it exceeds twice that.

{doc.intro}
{doc.provenance(report)}
{chr(10).join(rows)}

{doc.paper_note}
"""
    doc_path.write_text(text)


def task_page(doc: TaskDoc) -> Callable[[dict, Path, str], None]:
    """The `QualityBench.page` of a task whose page is a `TaskDoc`."""
    return lambda report, folder, command: write_task_doc(doc, report, folder / doc.page_name, command)
