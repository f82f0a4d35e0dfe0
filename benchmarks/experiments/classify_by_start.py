"""Why block-wise label denoising lost accuracy: where inference starts, and what each block reads. Prints JSON.

    for i in 0 1 2; do OMP_NUM_THREADS=1 python -m workers configs/classify.yaml --block $i --out runs/c6/b$i; done
    python benchmarks/experiments/speckles.py assemble configs/classify.yaml runs/c6  # the blocks -> a run
    python benchmarks/experiments/classify_by_start.py runs/c6 [runs/c12 ...] > by_start.json

(`--set model.num_layers=12` on both commands for the 12-layer run; `benchmarks/local_run.py` trains and
assembles the same blocks in one process.)

For each assembled classification run (EMA weights, the 1,000 held-out digits):
- accuracy after each step of the chain from either start (`classification.start`: noise = `sigma_max * randn`,
  the paper's; zero = the noise's mean), at B steps (one call per block) and at 10 and 30 equi-probability steps;
- the accuracy of the mean class probabilities over 8 noise seeds (what averaging the draws recovers);
- the mean probability of the true class at the end of the noise-start chain (what a posterior sampler scores);
- each block alone at the top of its noise range and at the geometric middle of it, with `z` the true label's
  noised embedding and with pure noise: how much each block reads the label from `z` and how much from the image.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared.assembly import load_assembled  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.data import load_split  # noqa: E402
from shared.evaluation import MAX_EVAL_EXAMPLES  # noqa: E402
from shared.sampling import equiprobable_sigmas  # noqa: E402
from shared.tasks.classification.outputs import inference_sigmas  # noqa: E402
from shared.tasks.classification.task import STARTS, classify  # noqa: E402

STEP_COUNTS = (10, 30)
ENSEMBLE_SEEDS = 8


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return round(float((probs.argmax(dim=1) == labels).double().mean()), 4)


def measure(run_dir: Path) -> dict:
    config = load_config(run_dir / "config.yaml")
    model, manifest = load_assembled(run_dir, "ema")
    images, labels = load_split(config.data, "test", limit=MAX_EVAL_EXAMPLES)
    noise = config.noise
    schedules = {"B": inference_sigmas(config)}
    for n in STEP_COUNTS:
        schedules[str(n)] = equiprobable_sigmas(n, noise.sigma_min, noise.sigma_max, noise.log_mean, noise.p_std)
    chains = {}
    for name, sigmas in schedules.items():
        row = {}
        for start in STARTS:
            _, steps = classify(model, images, sigmas, seed=0, start=start)
            row[f"{start}_start_by_step"] = [accuracy(p, labels) for p in steps][-3:]
        draws = [classify(model, images, sigmas, seed=seed)[1][-1] for seed in range(ENSEMBLE_SEEDS)]
        row["noise_start_mean_of_8_seeds"] = accuracy(torch.stack(draws).mean(dim=0), labels)
        row["noise_start_true_class_probability"] = round(float(draws[0][torch.arange(len(labels)), labels].mean()), 4)
        chains[f"{name} steps"] = row
    blocks = []
    width = model.blocks[0].net.spec.hidden_size
    generator = torch.Generator(device="cpu").manual_seed(1)
    with torch.no_grad():
        for index, block in enumerate(model.blocks):
            lo, hi = manifest["blocks"][index]["sigma_lo"], manifest["blocks"][index]["sigma_hi"]
            for sigma in (hi, math.sqrt(max(lo, 1e-3) * hi)):
                s = torch.full((len(labels),), sigma)
                eps = torch.randn((len(labels), width), generator=generator)
                label_z = block.net.targets()[labels] + sigma * eps
                blocks.append(
                    {
                        "block": index,
                        "layers": block.net.spec.num_layers,
                        "sigma": round(sigma, 4),
                        "true_label_z": accuracy(block(label_z, s, images), labels),
                        "pure_noise_z": accuracy(block(sigma * eps, s, images), labels),
                    }
                )
    return {"run_dir": str(run_dir), "num_layers": config.model.num_layers, "chains": chains, "blocks": blocks}


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(json.dumps({"runs": [measure(Path(run)) for run in sys.argv[1:]]}, indent=1))


if __name__ == "__main__":
    main()
