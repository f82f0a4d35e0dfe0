"""Recurrent depth's part of the quality benchmark (`dblocks bench quality --task recurrent_depth`): the same
network trained as one denoiser (DiffusionBlocks) and Huginn's way (truncated backpropagation through a random
number of core iterations), at equal steps and at equal training FLOPs on configs/recurrent.yaml, each run also
evaluated at K = 1..64 core iterations; the paper's Table 5 beside.

Training FLOPs and the memory a step keeps are counted by the code (`flops.py`), and the equal-FLOPs case's steps
are derived from those counts, not set by hand."""

from __future__ import annotations

from pathlib import Path

from shared.config import Config
from shared.tasks.bench import Budget, Case, QualityBench, completion, difference, versus

# Paper Table 5 (LM1B, MAUVE; shape only): both recipes at the same steps, the denoiser at about a tenth of the
# compute.
PAPER = {"denoising": (0.70, "Table 5, LM1B MAUVE"), "truncated backprop": (0.49, "Table 5, LM1B MAUVE")}
ITERATIONS = (1, 2, 4, 8, 16, 32, 64)  # K at inference, the curve
MIB = 2**20


def _recipe(config: Config, objective: str):
    from shared.tasks import task_for

    return task_for(config.with_overrides([f"autoregressive.objective={objective}"]))


def _net(config: Config):
    from shared.plan import block_specs, net_spec

    (spec,) = block_specs(config)
    return net_spec(config, spec.num_layers)


def quarter_steps(config: Config) -> tuple[str, ...]:
    return (f"train.steps_per_block={max(1, config.train.steps_per_block // 4)}",)


def denoisers_flops(config: Config) -> tuple[str, ...]:
    """The steps at which Huginn's recipe costs the training FLOPs of the denoiser's run of the same config."""
    from shared.tasks.recurrent_depth.flops import equal_flops_steps

    steps = equal_flops_steps(_recipe(config, "backprop"), _recipe(config, "denoising"), _net(config),
                              config.train.steps_per_block)  # fmt: skip
    return (f"train.steps_per_block={steps}",)


def compute_fields(config: Config) -> dict:
    """Each run's training FLOPs and per-step memory, counted (recorded with the run)."""
    from shared.tasks import resolve_data, task_for
    from shared.tasks.recurrent_depth.flops import step_memory, training_flops

    resolved = resolve_data(config)
    task, net, batch = task_for(resolved), _net(resolved), config.train.batch_size
    return {
        "objective": config.autoregressive.objective,
        **training_flops(task, net, batch_size=batch, steps=config.train.steps_per_block),
        **step_memory(task, net, batch_size=batch),
    }


DENOISING = Case("denoising", ("autoregressive.objective=denoising",))
DENOISING_QUARTER = Case("denoising, 1/4 steps", ("autoregressive.objective=denoising",), derive=quarter_steps)
HUGINN_FLOPS = Case("truncated backprop, equal FLOPs", ("autoregressive.objective=backprop",), derive=denoisers_flops)
HUGINN = Case("truncated backprop", ("autoregressive.objective=backprop",))  # equal steps
SMALL = Budget([DENOISING, DENOISING_QUARTER, HUGINN_FLOPS, HUGINN], [0, 1, 2], ())


def _cell(stat: dict, digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


QUALITY_KEYS = (("mauve", "MAUVE", True, 3), ("gen_ppl", "generative perplexity", False, 1))  # key, name, higher?


def flops_for_quality(results: list[dict], key: str, name: str, higher: bool, digits: int) -> list[str]:
    """Per recipe, the least training FLOPs among its cases whose mean `key` reaches the level both recipes reach
    (the worse of the two recipes' best means)."""
    recipes: dict[str, list[dict]] = {}
    for r in results:
        recipes.setdefault(r["objective"], []).append(r)
    if len(recipes) < 2:
        return []
    best, worst = (max, min) if higher else (min, max)
    level = worst(best(r["ema"][key]["mean"] for r in rows) for rows in recipes.values())
    lines = []
    for objective, rows in recipes.items():
        reach = [r for r in rows if (r["ema"][key]["mean"] >= level if higher else r["ema"][key]["mean"] <= level)]
        cheapest = min(reach, key=lambda r: r["train_flops"])
        short = [r for r in rows if r not in reach and r["train_flops"] < cheapest["train_flops"]]
        line = (f"  - **{objective}**: at most {cheapest['train_flops']:.3g} FLOPs ({cheapest['label']}: "
                f"{_cell(cheapest['ema'][key], digits)})")  # fmt: skip
        if short:
            below = max(short, key=lambda r: r["train_flops"])
            line += (f", more than {below['train_flops']:.3g} ({below['label']}: "
                     f"{_cell(below['ema'][key], digits)})")  # fmt: skip
        lines.append(line)
    return [f"- Training FLOPs each recipe needs for {name} {level:.{digits}f} (the worse of the two recipes' best "
            "means), bracketed by its measured cases: the cheapest that reaches it, and the dearer of those below "
            "that do not:", *lines]  # fmt: skip


def equal_flops(reference: dict, other: dict) -> list[str]:
    """The denoiser against Huginn's recipe at the denoiser's training FLOPs, on each quality metric."""
    lines = [f"- At equal training FLOPs (the denoiser's {reference['train_flops']:.3g}), denoising minus truncated "
             "backprop:"]  # fmt: skip
    for key, name, higher, digits in QUALITY_KEYS:
        diff, se = difference(reference["ema"][key], other["ema"][key])
        better = "denoising" if (diff > 0) == higher else "truncated backprop"
        verdict = f"{better} is better, beyond 2 SE" if abs(diff) > 2 * se else "no difference beyond 2 SE"
        lines.append(f"  - {name} {diff:+.{digits}f} ± {se:.{digits}f}: {verdict}")
    return lines


def write_page(report: dict, folder: Path, command: str) -> None:
    results = report["results"]
    by_label = {r["label"]: r for r in results}
    reference = by_label.get("denoising")
    rows = [
        "| case | steps | training FLOPs | vs denoising | saved activations / step | state | seeds | MAUVE (EMA) "
        "| MAUVE (raw) | gen. perplexity (EMA) | MAUVE vs denoising | gen. perplexity vs denoising | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r['train_flops'] / reference['train_flops']:.2f}x" if reference else "—"
        paper = f"{r['paper_mauve']:.2f} ({r['paper_setting']})" if r.get("paper_mauve") else "—"
        rows.append(
            f"| {r['label']} | {r['steps_per_block']:,} | {r['train_flops']:.3g} | {ratio} "
            f"| {r['saved_activation_bytes'] / MIB:.1f} MiB | {r['state_bytes'] / MIB:.1f} MiB | {len(r['seeds'])} "
            f"| {_cell(r['ema']['mauve'])} | {_cell(r['raw']['mauve'])} | {_cell(r['ema']['gen_ppl'], 1)} "
            f"| {versus(r, reference, 'mauve', digits=3)} | {versus(r, reference, 'gen_ppl', digits=1)} | {paper} |"
        )
    curve_labels = [r["label"] for r in results if "by_steps" in r]
    curve = [f"| K | {' | '.join(curve_labels)} |", "|---|" + "---|" * len(curve_labels)]
    for k in ITERATIONS:
        cells = [f"{_cell(by_label[label]['by_steps'][str(k)]['mauve'])} / "
                 f"{_cell(by_label[label]['by_steps'][str(k)]['gen_ppl'], 0)}"
                 if str(k) in by_label[label]["by_steps"] else "—" for label in curve_labels]  # fmt: skip
        curve.append(f"| {k} | {' | '.join(cells)} |")
    answers = []
    flops_case = by_label.get("truncated backprop, equal FLOPs")
    if reference and flops_case:
        answers += equal_flops(reference, flops_case)
    for key, name, higher, digits in QUALITY_KEYS:
        answers += flops_for_quality(results, key, name, higher, digits)
    truth = report.get("true_continuation_ppl")
    references = f"the reference LM's own held-out perplexity: {report.get('reference_ppl', float('nan')):.1f}"
    if truth is not None:
        references += f"; the true continuations' under it: {truth:.1f}"
    text = f"""# Quality, recurrent depth: one denoiser against truncated backpropagation (generated)

Produced by `{command}` ({completion(report)}); {report.get("wall_s", 0.0) / 60:.0f} minutes of runs (training and
evaluation, summed over runs) on this project's 2-core CPU machine. Every case trains through the coordinator and
Ray. Values are mean ± standard deviation over seeds; "vs denoising" is the difference of means ± its standard
error, and says whether it exceeds twice that.

Base config `configs/recurrent.yaml`: a prelude of 2 layers, a core of 4, a coda of 2, width 64, the autoregressive
task's corpus (Python's documentation), 512-token BPE, contexts of 64; batch 32. MAUVE and generative perplexity are
the autoregressive task's (256 held-out prompts of 16 tokens continued by 16 at temperature 1; {references}), at
K = 32 core iterations per generated token. MAUVE is computed from 256 continuations in 25 clusters: it separates
little at this size, so generative perplexity is reported beside it (lower is better while it stays above the true
continuations').

- **denoising**: DiffusionBlocks' recipe, the core one denoiser over the whole noise range, one core pass per
  training example; each inference iteration an Euler step. **1/4 steps**: the same at a quarter of the steps.
- **truncated backprop**: Huginn's recipe, 1..32 core iterations per step, gradients through the last 8, at the
  denoiser's steps; **equal FLOPs**: at the steps whose counted training FLOPs equal the denoiser's run.

Training FLOPs: torch's FlopCounterMode over one real training step per recipe (Huginn's: the mean over r = 1..32),
times batch and steps. Saved activations: the bytes of every tensor autograd keeps for the step's backward (Huginn's
at r >= 8, its peak); state: weights, gradients, AdamW's two moments and the EMA copy (float32), the same for both.

{chr(10).join(rows)}

{chr(10).join(answers)}

## Quality against K, the core iterations per generated token (MAUVE / generative perplexity, EMA weights)

{chr(10).join(curve)}

The paper's column is LM1B (Table 5: MAUVE 0.70 for the denoiser at about a tenth of the training compute, 0.49 for
Huginn's recipe, both at the same steps): compare the *shape*, not the values.
"""
    (folder / "quality-recurrent-depth.md").write_text(text)


QUALITY = QualityBench(
    default_config="configs/recurrent.yaml",
    metrics=("mauve", "gen_ppl", "tokens_per_s"),
    budgets={"small": SMALL},
    paper=PAPER,
    paper_key="paper_mauve",
    results_stem="quality-recurrent-depth",
    command="dblocks bench quality --task recurrent_depth --json",
    page=write_page,
    run_fields=compute_fields,
    report_fields=lambda config, ema: {
        "reference_ppl": ema["reference_ppl"],
        "true_continuation_ppl": ema["true_continuation_ppl"],
    },
    steps_curve=ITERATIONS,
)
