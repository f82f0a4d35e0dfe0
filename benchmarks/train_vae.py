"""A small VAE trained here, so latent DiffusionBlocks can be measured end to end without downloading one
(docs/latent.md). Not a product feature: a diffusers `AutoencoderKL` (the class SD's VAE is), 4x downsampling to
4 latent channels, trained on an image folder (`benchmarks/make_shapes.py --size 64`) with a pixel MSE and a small
KL term, then saved with `save_pretrained` and the `scaling_factor` that gives its training latents unit std (as SD
chose 0.18215). Prints JSON: the held-out reconstruction error (the floor any latent model's samples sit on),
parameters, steps and seconds.

    python benchmarks/make_shapes.py data/shapes64 --size 64
    python benchmarks/train_vae.py data/shapes64 --out runs/shapes-vae --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.data.decode import Transform  # noqa: E402
from shared.data.sources import open_source  # noqa: E402
from shared.data.splits import in_test_split  # noqa: E402


def load_images(source: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) images of a folder in [-1, 1], split as training splits it (test_fraction 0.1, seed 0)."""
    opened = open_source(source)
    transform = Transform(channels=3, image_size=size, resize="center_crop")
    images = [transform(p, w) for shard in opened.shards() for p, _, w in opened.read(shard)]
    x = torch.from_numpy(np.stack(images))
    test = torch.from_numpy(in_test_split(np.arange(len(x)), 0, 0.1))
    return x[~test], x[test]


def build(latent_channels: int = 4):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=16,
        mid_block_add_attention=False,
        scaling_factor=1.0,
    )


@torch.no_grad()
def reconstruction(vae, images: torch.Tensor, batch: int = 64) -> dict:
    errors = []
    for part in images.split(batch):
        recon = vae.decode(vae.encode(part).latent_dist.mean).sample.clamp(-1, 1)
        errors.append(((recon - part) ** 2).flatten(1).mean(1))
    mse = float(torch.cat(errors).mean())  # on [-1, 1]; PSNR on [0, 1] pixels
    return {"mse": mse, "psnr_db": 10 * math.log10(4.0 / mse)}


@torch.no_grad()
def latent_std(vae, images: torch.Tensor, batch: int = 64) -> float:
    means = [vae.encode(part).latent_dist.mean for part in images.split(batch)]
    return float(torch.cat(means).std())


def train(vae, images: torch.Tensor, *, steps: int, batch_size: int, lr: float, kl_weight: float, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = ((recon - batch) ** 2).mean() + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="an image folder (class sub-folders)")
    parser.add_argument("--out", type=Path, required=True, help="the VAE folder to write (diffusers layout)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    train_x, test_x = load_images(args.source, args.size)
    vae = build()
    started = time.perf_counter()
    losses = train(vae.train(), train_x, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   kl_weight=args.kl_weight, seed=0)  # fmt: skip
    train_s = time.perf_counter() - started
    vae.eval()
    scaling = 1.0 / latent_std(vae, train_x[:2048])
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(args.out)
    report = {
        "out": str(args.out),
        "source": args.source,
        "image_size": args.size,
        "latent_shape": [4, args.size // 4, args.size // 4],
        "parameters": sum(p.numel() for p in vae.parameters()),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_s": round(train_s, 1),
        "final_loss": losses[-1],
        "scaling_factor": scaling,
        "num_train": len(train_x),
        "num_test": len(test_x),
        "test_reconstruction": reconstruction(vae, test_x),
    }
    print(json.dumps(report, indent=2) if args.json else f"wrote {args.out}: {report['test_reconstruction']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
