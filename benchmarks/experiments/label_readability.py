"""How much of the label the noisy label embedding alone gives away, by noise level. Prints JSON.

    python benchmarks/experiments/label_readability.py [--classes 10] [--dim 64]

A label-denoising block's K normalised class embeddings in d dimensions at initialisation (the same in every block),
z = y + sigma * eps, and the Bayes decision from z alone (`shared.tasks.classification.task.label_readability`: the
nearest embedding, argmax <z, y_k>, equal norms and priors). Where this accuracy sits near 1 a block can copy the
label from z; where it sits near 1/K only the image can decide. The classification task's training noise
(`noise.p_mean` in configs/classify.yaml) is placed by this curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared.tasks.classification.task import initial_class_embedding, label_readability  # noqa: E402

SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64, help="embedding width (model.hidden_size)")
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    targets = F.normalize(initial_class_embedding(args.classes, args.dim), dim=1)
    generator = torch.Generator().manual_seed(0)
    curve = {str(s): round(label_readability(s, targets, samples=args.samples, generator=generator), 3) for s in SIGMAS}
    report = {"classes": args.classes, "dim": args.dim, "samples": args.samples, "accuracy_from_z_alone": curve}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
