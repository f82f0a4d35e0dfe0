"""The artefacts of a classification run: held-out accuracy and calibration, the confusion matrix, and what each
block adds (the probability of the true class after each step). No Redis, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shared.assembly import load_assembled
from shared.config import Config
from shared.data import data_shape, load_split
from shared.evaluation import MAX_EVAL_EXAMPLES
from shared.plan import boundaries
from shared.sampling import equiprobable_sigmas
from shared.tasks.base import EvalOptions
from shared.tasks.classification.bench import QUALITY
from shared.tasks.classification.task import STARTS, boundary_sigmas, classify, expected_calibration_error
from shared.visualize import figure

GRIDS = ("official", "boundaries")


def inference_sigmas(config: Config, grid: str | None = None) -> torch.Tensor:
    """The noise levels of inference (`grid` defaults to the config's `classification.grid`). `num_steps` 0, one
    call per block: `official`, B points of the equal-probability grid from sigma_max to sigma_min (B - 1 Euler
    steps, the last call at sigma_min); `boundaries`, each block at its upper boundary. `num_steps` > 0: that many
    calls on the equal-probability grid."""
    grid = grid or config.classification.grid
    if grid not in GRIDS:
        raise ValueError(f"classification grid must be one of {GRIDS}, got {grid!r}")
    steps, noise = config.classification.num_steps, config.noise
    if steps == 0 and grid == "boundaries":
        return boundary_sigmas(boundaries(config))
    calls = steps or config.planned_blocks
    return equiprobable_sigmas(calls, noise.sigma_min, noise.sigma_max, noise.log_mean, noise.p_std)


def predict_images(
    run_dir: Path,
    config: Config,
    images: torch.Tensor,
    *,
    weights: str = "ema",
    seed: int = 0,
    model=None,
    batch_size: int = 500,
    start: str | None = None,
    grid: str | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(final class probabilities (N, K), probabilities after each step) for images in [-1, 1]; `start` and `grid`
    default to the config's `classification.start` and `classification.grid`."""
    model = model if model is not None else load_assembled(run_dir, weights)[0]
    sigmas = inference_sigmas(config, grid)
    start = start or config.classification.start
    finals, per_step = [], []
    for first in range(0, len(images), batch_size):
        logits, steps = classify(model, images[first : first + batch_size], sigmas, seed=seed + first, start=start)
        finals.append(logits.softmax(dim=1))
        per_step.append(steps)
    return torch.cat(finals), [torch.cat([s[i] for s in per_step]) for i in range(len(per_step[0]))]


def evaluate_classifier(run_dir: Path, config: Config, *, weights: str = "ema", seed: int = 0, model=None) -> dict:
    """Held-out accuracy, expected calibration error and confusion matrix of a finished classification run, at the
    config's inference start and grid; the accuracy from either start beside it (`accuracy_noise_start`,
    `accuracy_zero_start`: what sampling the label costs against following the most probable one), and from every
    start on every grid (`accuracy_by_grid`; `accuracy_boundaries_grid`, `accuracy_official_grid`: the config's
    start on each grid)."""
    d = config.data
    images, labels = load_split(d, "test", limit=MAX_EVAL_EXAMPLES)
    model = model if model is not None else load_assembled(run_dir, weights)[0]
    section = config.classification
    grids = GRIDS if section.num_steps == 0 else (section.grid,)  # with num_steps set, the grid is that
    outcomes = {
        (grid, start): predict_images(
            run_dir, config, images, weights=weights, seed=seed, model=model, start=start, grid=grid
        )  # fmt: skip
        for grid in grids
        for start in STARTS
    }
    by_grid = {
        grid: {start: float((outcomes[grid, start][0].argmax(dim=1) == labels).double().mean()) for start in STARTS}
        for grid in grids
    }
    accuracies = by_grid[section.grid]
    probs, steps = outcomes[section.grid, section.start]
    predicted = probs.argmax(dim=1)
    num_classes = data_shape(config).num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device="cpu")
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return {
        "task": "classification",
        "accuracy": accuracies[config.classification.start],
        "ece": expected_calibration_error(probs, labels, config.classification.calibration_bins),
        "start": section.start,
        "grid": section.grid,
        "output": section.output,
        **{f"accuracy_{start}_start": accuracy for start, accuracy in accuracies.items()},
        **{f"accuracy_{grid}_grid": by_grid[grid][section.start] for grid in grids},
        **{f"accuracy_{grid}_{start}": by_grid[grid][start] for grid in grids for start in STARTS},
        "accuracy_by_grid": by_grid,
        "sigmas": inference_sigmas(config).tolist(),
        "num_examples": len(labels),
        "num_steps": len(steps),
        "weights": weights,
        "seed": seed,
        "true_class_probability_by_step": [
            float(p[torch.arange(len(labels), device=p.device), labels].mean()) for p in steps
        ],
        "confusion": confusion.tolist(),
        "run_dir": str(run_dir),
    }


def write_classification_artefacts(run_dir: Path, config: Config, model) -> str:
    """eval.json, confusion.png and block_probability.png of a finished run; returns a one-line summary."""
    result = evaluate_classifier(run_dir, config, weights=config.sample.weights, model=model)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    plot_confusion(result["confusion"], run_dir / "confusion.png")
    plot_step_probability(result["true_class_probability_by_step"], run_dir / "block_probability.png")
    return f"held-out accuracy {result['accuracy']:.4f}, ECE {result['ece']:.4f} (eval.json)"


def plot_confusion(confusion: list[list[int]], path: Path) -> None:
    with figure(path, figsize=(4.2, 3.8)) as (fig, (ax,)):
        image = ax.imshow(confusion, cmap="Blues")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title("held-out confusion matrix")
        fig.colorbar(image, ax=ax)


def plot_step_probability(probabilities: list[float], path: Path) -> None:
    """Mean probability of the true class after each step (each block, with one step per block)."""
    with figure(path, figsize=(4.2, 3.0)) as (_, (ax,)):
        ax.plot(range(len(probabilities)), probabilities, marker="o")
        ax.set_xlabel("step (block 0 first)")
        ax.set_ylabel("mean P(true class)")
        ax.set_ylim(0, 1.02)


class ClassificationOutputs:
    name = "classification"
    quality = QUALITY

    def write_artefacts(self, run_dir: Path, config: Config, manifest, storage, run_id, blocks, model) -> str:
        return write_classification_artefacts(run_dir, config, model)

    def predict(self, run_dir: Path, config: Config, images: torch.Tensor, *, weights: str, seed: int):
        return predict_images(run_dir, config, images, weights=weights, seed=seed)[0]

    def evaluate(self, run_dir: Path, config: Config, options: EvalOptions) -> dict:
        return evaluate_classifier(run_dir, config, weights=options.weights, seed=options.seed)

    def summary(self, result: dict, options: EvalOptions) -> str:
        return (
            f"accuracy {result['accuracy']:.4f} from the {result['start']} start on the {result['grid']} grid (noise "
            f"{result['accuracy_noise_start']:.4f}, zero {result['accuracy_zero_start']:.4f})  ECE "
            f"{result['ece']:.4f}  ({result['num_examples']} held-out examples, {result['num_steps']} steps, "
            f"{options.weights} weights)"
        )
