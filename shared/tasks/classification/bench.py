"""Classification's part of the quality benchmark (`dblocks bench quality --task classification`): label denoising
block-wise vs end-to-end vs the same network trained by backprop, on configs/classify.yaml at 12 layers, compared by
held-out accuracy (from both starts) and calibration error; the paper's Table 1 beside."""

from __future__ import annotations

from pathlib import Path

from shared.tasks.bench import (
    END_TO_END,
    Budget,
    Case,
    QualityBench,
    TaskDoc,
    equiprobable,
    paired,
    write_task_doc,
)

# Paper Table 1 (ViT, test accuracy %; shape only: CIFAR-100 there, 4,000 MNIST digits here).
PAPER = {
    "backprop": (60.25, "Table 1, CIFAR-100"),
    "B=3 equiprobable gamma=0.05": (59.30, "Table 1, CIFAR-100"),
}
BACKPROP = Case("backprop", ("train.mode=end_to_end", "classification.objective=backprop"))
# At equal layer-updates, 3 seeds, 12 layers: 4 per block (2-layer blocks read the image too weakly).
SMALL = Budget([BACKPROP, END_TO_END, equiprobable(3, 0.05)], [0, 1, 2], ("model.num_layers=12",))
# The official code's output form against this project's first one, B = 3 as in SMALL, each run read from both
# starts on both inference grids (issue 40; docs/method.md, "Departures").
B3 = equiprobable(3, 0.05)
FIDELITY_METRICS = ("accuracy_official_noise", "accuracy_official_zero", "accuracy_boundaries_noise",
                    "accuracy_boundaries_zero", "ece")  # fmt: skip
FIDELITY = Budget(
    [
        Case("B=3 features output", (*B3.overrides, "classification.output=features")),
        Case("B=3 skip output", (*B3.overrides, "classification.output=skip")),
    ],  # fmt: skip
    [0, 1, 2],
    ("model.num_layers=12",),
    metrics=FIDELITY_METRICS,
)

DOC = TaskDoc(
    title="classification by label denoising",
    page_name="quality-classification.md",
    metrics=(("accuracy", "accuracy"), ("ece", "ECE"), ("accuracy_zero_start", "accuracy, zero start")),
    compared=("accuracy", "accuracy_zero_start"),
    reference=lambda r: r.get("objective") == "backprop",
    reference_name="backprop",
    intro="""Base config `configs/classify.yaml` with 12 layers (width 64, patch 4, 1,500 steps per block, batch
128, training noise log-normal at p_mean 0.8, p_std 1.2: docs/tasks.md, "The noise"). Accuracy and expected
calibration error (15 bins) on the held-out MNIST digits; inference for label denoising is one call per block,
on the grid named below (`classification.grid`). "accuracy" starts the chain from noise (the paper's,
`classification.start: noise`), which draws the label from the model's posterior; "accuracy, zero start" follows
the most probable label (`classification.start: zero`; docs/tasks.md). The backprop baseline sees no noise: both
starts give it the same accuracy.

- **backprop**: the same network (`LabelDenoiserNet`) trained end to end as an ordinary classifier: the label token
  carries zeros, the noise conditioning is constant, plain cross-entropy (`classification.objective: backprop`).
- **end_to_end**: label denoising with one block owning the whole noise range (the B = 1 plan).
- **B=3**: DiffusionBlocks, three blocks of four layers trained independently, gamma 0.05.""",
    paper_note="The paper's column is a ViT on CIFAR-100 (Table 1, accuracy %): compare the *shape* (block-wise "
    "within about a point of backprop), not the values.",
    provenance=lambda report: settings(report),
)


def settings(report: dict) -> str:
    """Which grid and output form produced a report's numbers (reports before issue 40: boundaries, features)."""
    grid = report.get("grid", "boundaries")
    output = report.get("output", "features")
    before = "" if "grid" in report else " (this report predates `classification.grid`: the then default)"
    return (f"\nThese numbers: the **{grid}** inference grid{before}, the **{output}** output form, the noise start "
            "for \"accuracy\".\n")  # fmt: skip


FIDELITY_DOC = TaskDoc(
    title="classification, the official output form and inference grid",
    page_name="quality-classification-fidelity.md",
    metrics=(
        ("accuracy_official_noise", "official grid, noise start"),
        ("accuracy_official_zero", "official grid, zero start"),
        ("accuracy_boundaries_noise", "boundary grid, noise start"),
        ("accuracy_boundaries_zero", "boundary grid, zero start"),
        ("ece", "ECE"),
    ),
    compared=FIDELITY_METRICS[:4],
    reference=lambda r: r.get("label") == "B=3 features output",
    reference_name="features output",
    intro="""Base config `configs/classify.yaml` with 12 layers, B = 3 blocks of four layers, gamma 0.05, 1,500
steps per block, batch 128, training noise at p_mean 0.8. Held-out accuracy of every run is read four ways: on the
**official grid** (B points of the equal-probability grid, sigma_max down to sigma_min: two Euler steps and a last
call at sigma_min, the official code's default and now `classification.grid`'s) and on the **boundary grid** (each
block called at its upper boundary, the last logits read there: this project's former default), each from the
**noise start** (the paper's) and the **zero start**. ECE is on the official grid from the noise start.

- **features output**: `logits = head(adaLN(F))`, the noisy label entering only at the input (the project's first
  form, `classification.output: features`).
- **skip output**: `logits = head(adaLN(c_out * F + c_skip * z))`, the official code's (`classification.output:
  skip`): the noisy label also reaches the output through the skip path, as `D = c_skip z + c_out F` for images.""",
    paper_note="The paper reports no ablation of these; its Table 1 numbers come from the official code, i.e. the "
    "skip output on the official grid from the noise start.",
    provenance=lambda report: paired_effects(report),
)

# Within-run effects: (name, metric minus metric), each paired by seed (the same trained blocks read two ways).
PAIRED = (
    ("official - boundary grid, noise start", "accuracy_official_noise", "accuracy_boundaries_noise"),
    ("official - boundary grid, zero start", "accuracy_official_zero", "accuracy_boundaries_zero"),
    ("zero - noise start, official grid", "accuracy_official_zero", "accuracy_official_noise"),
    ("zero - noise start, boundary grid", "accuracy_boundaries_zero", "accuracy_boundaries_noise"),
)


def paired_effects(report: dict) -> str:
    """The grid's and the start's effect on each case's own runs (EMA), paired by seed: a table for the page."""
    rows = [f"| case | {' | '.join(name for name, _, _ in PAIRED)} |", "|---|" + "---|" * len(PAIRED)]
    for case in FIDELITY.cases:
        runs = [r["ema"] for r in report.get("runs", []) if r["label"] == case.label]
        if runs:
            cells = [paired([r[a] - r[b] for r in runs]) for _, a, b in PAIRED]
            rows.append(f"| {case.label} | {' | '.join(cells)} |")
    head = ("\nThe grid's and the start's effects within each case (the same blocks read two ways; per-seed "
            "differences, mean ± standard error):\n\n")  # fmt: skip
    return head + "\n".join(rows) + "\n\nAgainst the features output:\n"


def write_pages(report: dict, folder: Path, command: str) -> None:
    doc = FIDELITY_DOC if report.get("budget") == "fidelity" else DOC
    write_task_doc(doc, report, folder / doc.page_name, command)


QUALITY = QualityBench(
    default_config="configs/classify.yaml",
    metrics=("accuracy", "ece", "accuracy_zero_start"),
    budgets={"small": SMALL, "fidelity": FIDELITY},
    paper=PAPER,
    paper_key="paper_accuracy",
    results_stem="quality-classification",
    command="dblocks bench quality --task classification --budget {budget} --json",
    page=write_pages,
    run_fields=lambda config: {"objective": config.classification.objective},
    report_fields=lambda config, ema: {
        "num_test_examples": ema["num_examples"],
        "grid": ema["grid"],
        "output": config.classification.output,
    },
)
