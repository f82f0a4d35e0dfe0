"""Image generation's part of the quality benchmark (`dblocks bench quality --budget B`): end-to-end vs block-wise
at equal layer-updates on the quickstart model, compared by FD and class accuracy of samples, the paper's Tables 2
and 7 beside; its generated page per budget (docs/quality-<budget>.md, with an FD-vs-B plot)."""

from __future__ import annotations

from pathlib import Path

from shared.tasks.bench import END_TO_END, WEIGHTS, Budget, Case, QualityBench, completion, versus
from shared.tasks.bench import equiprobable as _equi
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

SMALL = ("train.steps_per_block=2000",)
FLOW = ("noise.axis=flow", "noise.p_mean=0.0", "noise.p_std=1.0", "noise.sigma_min=0.001001", "noise.sigma_max=999.0")
FINETUNE_SOURCE = "runs/finetune-source"  # `dblocks train configs/quickstart.yaml --out runs/finetune-source` with
# FINETUNE_SOURCE_OVERRIDES: the long budget's end-to-end case (6,000 steps)
FINETUNE_SOURCE_OVERRIDES = ("train.mode=end_to_end", "train.steps_per_block=6000", "train.block_step_scale={}")

# Evaluation at 500 samples and 32 Euler steps in the medium budget: sampling 1,000 x 50 steps through the 12-layer
# end-to-end network took ~7 min per weights file here, more than its training.
BUDGETS = {
    "small": Budget(  # ~30 min: the quickstart model, one seed
        [
            END_TO_END,
            _equi(3, 0.05),
            Case("B=3 uniform_log", ("blocks.num_blocks=3", "blocks.partition=uniform_log")),
        ],
        [0],
        ("train.steps_per_block=2000",),
    ),
    "medium": Budget(  # <= 2.5 h: the paper's Tables 2 and 7 in shape, 3 seeds; 12 layers so B=4 divides
        [
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
        ],
        [0, 1, 2],
        ("model.num_layers=12", "model.hidden_size=48", "train.batch_size=64", "train.steps_per_block=800"),
        num_samples=500,
        num_steps=32,
    ),
    # does block-wise still win once end-to-end is good? 3x the small budget's steps
    "long": Budget([END_TO_END, _equi(3, 0.05)], [0], ("train.steps_per_block=6000",)),
    # Flow matching vs EDM from scratch at the quickstart's budget (configs/flow.yaml's noise against the
    # quickstart's), 3 seeds.
    "flow": Budget(
        [Case("B=3 EDM", ("blocks.num_blocks=3",)), Case("B=3 flow", FLOW)], [0, 1, 2], SMALL, num_samples=500
    ),
    # Block-wise fine-tuning from an end-to-end network (FINETUNE_SOURCE, the long budget's end-to-end case trained
    # first: benchmarks/README.md) against blocks trained from scratch, at a few budgets per block.
    "finetune": Budget(
        [
            *[
                Case(
                    f"B=3 from end-to-end, {k} steps",
                    (f"init.checkpoint={FINETUNE_SOURCE}", f"train.steps_per_block={k}"),
                )
                for k in (1, 200, 1000)
            ],
            *[Case(f"B=3 from scratch, {k} steps", (f"train.steps_per_block={k}",)) for k in (200, 1000)],
        ],
        [0, 1, 2],
        (),
        num_samples=500,
    ),
    "full": Budget(
        [
            END_TO_END,
            _equi(3, 0.05),
            Case("B=3 uniform_log", ("blocks.num_blocks=3", "blocks.partition=uniform_log")),
            *[_equi(b, 0.05) for b in (2, 4, 6)],
            *[_equi(3, g) for g in (0, 0.1)],
            Case("B=3 layers [2,4,6] gamma=0.05", ("blocks.num_blocks=3", "blocks.layers=[2,4,6]")),
        ],
        [0, 1, 2],
        ("model.num_layers=12", "train.steps_per_block=8000"),
    ),
}


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
            f"{versus(r, e2e, 'fd')} | {paper} |"
        )
    _plot_fd_vs_blocks(report, plot_path)
    status = completion(report)
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


def write_pages(report: dict, folder: Path, command: str) -> None:
    budget = report["budget"]
    if budget in COMPARISONS:
        write_comparison_doc(report, folder / f"quality-{budget}.md", command, *COMPARISONS[budget])
        return
    write_quality_doc(report, folder / f"quality-{budget}.md", folder / f"quality_fd_vs_b_{budget}.png", command)


def _steps(label: str) -> str:
    return label.rsplit(", ", 1)[-1]  # "B=3 from scratch, 200 steps" -> "200 steps"


# Budgets that compare something other than block counts: (title, what they say, each row's reference row)
COMPARISONS = {
    "flow": (
        "flow matching against EDM, from scratch",
        "Both B = 3 on the quickstart model at 2,000 steps per block; the flow case is `configs/flow.yaml`'s noise "
        "(logit-normal t at SD3's defaults, velocity MSE, t in [0.001, 0.999]). Compared with the EDM case.",
        lambda row, rows: next((r for r in rows if r["label"] == "B=3 EDM"), None),
    ),
    "finetune": (
        "block-wise fine-tuning from an end-to-end network, against blocks from scratch",
        f"Blocks started from `{FINETUNE_SOURCE}` (the long budget's end-to-end case: 6,000 steps, all 6 layers; "
        "its own evaluation in docs/quality.md) and fine-tuned for the given steps each, against blocks trained from "
        "random weights for as many. Compared with from-scratch at the same steps.",
        lambda row, rows: next(
            (r for r in rows if r["label"] == f"B=3 from scratch, {_steps(row['label'])}" and r is not row), None
        ),
    ),
}


def write_comparison_doc(report: dict, doc_path: Path, command: str, title: str, intro: str, reference) -> None:
    """The page of a budget that compares recipes at B = 3: EMA and raw, each row against its reference row."""
    results = report["results"]
    rows = [
        "| run | steps per block | seeds | FD EMA | FD raw | accuracy EMA | accuracy raw | FD vs reference (EMA) | "
        "accuracy vs reference (EMA) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [
            f"{r[w][k]['mean']:.{p}f} ± {r[w][k]['std']:.{p}f}"
            for k, p in (("fd", 2), ("class_accuracy", 3))
            for w in WEIGHTS
        ]
        ref = reference(r, results)
        rows.append(
            f"| {r['label']} | {r['steps_per_block']:,} | {len(r['seeds'])} | {' | '.join(cells)} | "
            f"{versus(r, ref, 'fd')} | {versus(r, ref, 'class_accuracy', 3)} |"
        )
    text = f"""# Quality, {title} (generated)

Produced by `{command}` ({completion(report)}); {report["num_samples"]} class-balanced samples per run and weights,
Euler {report.get("num_steps", 50)} steps (Karras spacing), CFG 2.0; {report.get("wall_s", 0.0) / 60:.0f} minutes of
wall time on this project's 2-core CPU machine. {intro} FD: Frechet distance in the features of a small CNN trained
on the training split only (held-out accuracy {report["classifier_test_accuracy"]:.3f}; floor, real train vs held-out:
{report["fd_floor"]:.2f}); class accuracy: the fraction of samples that classifier recognises as the class asked
for. Mean ± standard deviation over seeds; "vs reference" is the difference of means ± its standard error, and says
whether it exceeds twice that.

{chr(10).join(rows)}
"""
    doc_path.write_text(text)


QUALITY = QualityBench(
    default_config="configs/quickstart.yaml",
    metrics=("fd", "class_accuracy"),
    budgets=BUDGETS,
    paper=PAPER,
    paper_key="paper_fid",
    results_stem="quality",
    command="dblocks bench quality --budget {budget} --json",
    page=write_pages,
    report_fields=lambda config, ema: {
        "fd_floor": ema["fd_floor"],
        "classifier_test_accuracy": ema["classifier_test_accuracy"],
    },
)
