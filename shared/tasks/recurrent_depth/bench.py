"""Recurrent depth's part of the quality benchmark (`dblocks bench quality --task recurrent_depth`): the same
network trained as one denoiser (DiffusionBlocks) and Huginn's way (truncated backpropagation through a random
number of core iterations), at equal steps on configs/recurrent.yaml; the paper's Table 5 beside."""

from __future__ import annotations

from shared.tasks.bench import Budget, Case, QualityBench, TaskDoc, task_page

# Paper Table 5 (LM1B, MAUVE; shape only).
PAPER = {"denoising": (0.70, "Table 5, LM1B MAUVE"), "truncated backprop": (0.49, "Table 5, LM1B MAUVE")}
DENOISING = Case("denoising", ("autoregressive.objective=denoising",))
HUGINN = Case("truncated backprop", ("autoregressive.objective=backprop",))
SMALL = Budget([DENOISING, HUGINN], [0, 1, 2], ())

DOC = TaskDoc(
    title="recurrent depth, one denoiser against truncated backpropagation",
    page_name="quality-recurrent-depth.md",
    metrics=(("mauve", "MAUVE"), ("gen_ppl", "gen. perplexity"), ("tokens_per_s", "tokens/s generated")),
    compared=("mauve", "gen_ppl"),
    reference=lambda r: r.get("label") == "truncated backprop",
    reference_name="truncated backprop",
    intro="""Base config `configs/recurrent.yaml` (a prelude of 2 layers, a core of 4, a coda of 2, width 64, the
autoregressive task's corpus, tokens and evaluation); K = 32 core iterations per generated token at evaluation.

- **denoising**: DiffusionBlocks' recipe, the core one denoiser over the whole noise range, one core pass per
  training example; each inference iteration an Euler step.
- **truncated backprop**: Huginn's recipe, 1..32 core iterations per step, gradients through the last 8.""",
    paper_note="The paper's column is LM1B (Table 5: MAUVE 0.70 for the denoiser at about a tenth of the training "
    "compute, 0.49 for Huginn's recipe): compare the *shape*, not the values.",
)

QUALITY = QualityBench(
    default_config="configs/recurrent.yaml",
    metrics=("mauve", "gen_ppl", "tokens_per_s"),
    budgets={"small": SMALL},
    paper=PAPER,
    paper_key="paper_mauve",
    results_stem="quality-recurrent-depth",
    command="dblocks bench quality --task recurrent_depth --json",
    page=task_page(DOC),
    report_fields=lambda config, ema: {"reference_ppl": ema["reference_ppl"]},
)
