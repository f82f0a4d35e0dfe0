"""The autoregressive LM's part of the quality benchmark (`dblocks bench quality --task autoregressive`): B = 4
block-wise against the same backbone trained as an ordinary next-token LM (backprop, the paper's "AR") and the same
denoiser end to end (B = 1), at equal layer-updates on configs/autoregressive.yaml; the paper's Table 4 beside."""

from __future__ import annotations

from shared.tasks.bench import END_TO_END, Budget, Case, QualityBench, TaskDoc, equiprobable, task_page

# Paper Table 4 (LM1B, MAUVE; shape only: a small model on Python's documentation here).
PAPER = {"backprop": (0.50, "Table 4, LM1B MAUVE"), "B=4 equiprobable gamma=0.1": (0.71, "Table 4, LM1B MAUVE")}
BACKPROP = Case("backprop", ("train.mode=end_to_end", "autoregressive.objective=backprop"))
SMALL = Budget([BACKPROP, END_TO_END, equiprobable(4, 0.1)], [0, 1, 2], ())

DOC = TaskDoc(
    title="autoregressive LM (next-token denoising), MAUVE and generative perplexity",
    page_name="quality-autoregressive.md",
    metrics=(("mauve", "MAUVE"), ("gen_ppl", "gen. perplexity"), ("tokens_per_s", "tokens/s generated")),
    compared=("mauve",),
    reference=lambda r: r.get("label") == "backprop",
    reference_name="backprop",
    intro="""Base config `configs/autoregressive.yaml` (8 layers, width 64, a 512-token BPE trained on the training
chunk, contexts of 64 tokens) on the built-in corpus (Python's documentation text). Each run continues 256 held-out
prompts of 16 tokens by 16 tokens (temperature 1); MAUVE compares the continuations with the true ones in the
features of a reference LM the project trains once on the training chunk (higher is better), and generative
perplexity is the continuations' perplexity under that reference (lower is better; the true continuations' is in
the JSON, `true_continuation_ppl`).

- **backprop**: the same backbone as an ordinary next-token LM, trained end to end by cross-entropy.
- **end_to_end**: the next-token denoiser, one network, all layers, the whole sigma range (B = 1).
- **B=4**: DiffusionBlocks, four blocks of two layers, each owning a quarter of the noise mass, gamma 0.1.""",
    paper_note="The paper's column is LM1B (Table 4: MAUVE 0.50 for the AR baseline, 0.71 block-wise; generative "
    "perplexity under Llama-2 14.58 vs 12.32): compare the *shape*, not the values.",
)

QUALITY = QualityBench(
    default_config="configs/autoregressive.yaml",
    metrics=("mauve", "gen_ppl", "tokens_per_s"),
    budgets={"small": SMALL},
    paper=PAPER,
    paper_key="paper_mauve",
    results_stem="quality-autoregressive",
    command="dblocks bench quality --task autoregressive --json",
    page=task_page(DOC),
    report_fields=lambda config, ema: {
        "reference_ppl": ema["reference_ppl"],
        "true_continuation_ppl": ema["true_continuation_ppl"],
        **({"ppl": ema["ppl"]} if "ppl" in ema else {}),
    },
)
