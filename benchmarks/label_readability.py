"""How much of the label the noisy label embedding alone gives away, by noise level. Prints JSON.

    python benchmarks/label_readability.py [--classes 10] [--dim 64]

K random unit-norm class embeddings in d dimensions (as a label-denoising block's, at initialisation), z = y + sigma
* eps, and the Bayes decision from z alone (the nearest embedding: argmax <z, y_k>, equal norms and priors). Where
this accuracy sits near 1 a block can copy the label from z; where it sits near 1/K only the image can decide. The
classification task's training noise (`noise.p_mean` in configs/classify.yaml) is placed by this curve.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def z_alone_accuracy(sigma: float, embeddings: torch.Tensor, *, samples: int, generator: torch.Generator) -> float:
    """Accuracy of the nearest-embedding decision from `z = y + sigma * eps` over uniformly drawn labels."""
    labels = torch.randint(0, len(embeddings), (samples,), generator=generator)
    z = embeddings[labels] + sigma * torch.randn(samples, embeddings.shape[1], generator=generator)
    return (z @ embeddings.T).argmax(dim=1).eq(labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64, help="embedding width (model.hidden_size)")
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(args.classes, args.dim, generator=generator), dim=1)
    curve = {
        str(s): round(z_alone_accuracy(s, embeddings, samples=args.samples, generator=generator), 3) for s in SIGMAS
    }
    report = {"classes": args.classes, "dim": args.dim, "samples": args.samples, "accuracy_from_z_alone": curve}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
