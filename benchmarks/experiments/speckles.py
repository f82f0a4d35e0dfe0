"""Where do the quickstart's speckles come from? Measurements behind docs/quality.md, "The quickstart's speckles".

    python benchmarks/experiments/speckles.py train configs/quickstart.yaml runs/qs [--set ...]  # all blocks at once
    python benchmarks/experiments/speckles.py assemble configs/quickstart.yaml runs/qs [--set ...]  # one by one
    python benchmarks/experiments/speckles.py measure runs/qs > speckles.json                              # prints JSON
    python benchmarks/experiments/speckles.py measure runs/qs --steps 20       # the default sampler at 20 steps only

`train` trains every block of a config as its own `python -m workers` process, all at once (1 thread each, as the
service gives each block 1 CPU), and assembles them as the service does. `measure` counts *speckles*: pixels brighter
than mid-grey (> 0 in [-1, 1]) whose 8 neighbours are all darker than mid-grey, per image. It reports them for the
held-out digits, for 1,000 samples under sampling variants (weights, guidance, steps, solver, schedule) with the
evaluation's FD and class accuracy, for the denoised estimate D at every sampler step (which block makes them), for
each block's D at the states around the hand-overs, and where in a patch they sit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.local_run import assemble_block_files  # noqa: E402
from coordinator.artefacts.assemble import block_file  # noqa: E402
from coordinator.settings import Settings  # noqa: E402
from shared.assembly import load_assembled  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.data import data_shape  # noqa: E402
from shared.evaluation import evaluate_samples  # noqa: E402
from shared.generate import class_labels, step_sigmas  # noqa: E402
from shared.plan import block_specs  # noqa: E402
from shared.sampling import SAMPLERS, euler_step, guided  # noqa: E402
from shared.tasks import resolve_data  # noqa: E402
from shared.tasks.image_generation.evaluation import reference_stats  # noqa: E402

VARIANTS = [  # name, weights, steps, cfg, solver, schedule
    ("default (EMA, 50 Euler steps, CFG 2, Karras)", "ema", 50, 2.0, "euler", "karras"),
    ("raw weights", "raw", 50, 2.0, "euler", "karras"),
    ("CFG 1 (no guidance)", "ema", 50, 1.0, "euler", "karras"),
    ("CFG 1.5", "ema", 50, 1.5, "euler", "karras"),
    ("20 steps", "ema", 20, 2.0, "euler", "karras"),
    ("100 steps", "ema", 100, 2.0, "euler", "karras"),
    ("Heun, 25 steps", "ema", 25, 2.0, "heun", "karras"),
    ("equiprobable schedule", "ema", 50, 2.0, "euler", "equiprobable"),
]


def speckle_mask(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) bool: brighter than mid-grey with every one of the 8 neighbours darker (outside counts dark)."""
    x = images.clamp(-1, 1)
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), value=-1.0), 3).view(n, c, 9, h * w)
    neighbours = torch.cat([patches[:, :, :4], patches[:, :, 5:]], 2).amax(2)
    return ((patches[:, :, 4] > 0) & (neighbours < 0)).view(n, c, h, w)


def speckles(images: torch.Tensor) -> float:
    """Speckles per image."""
    return float(speckle_mask(images).flatten(1).sum(1).double().mean())


def train(config_path: str, out: Path, overrides: list[str]) -> None:
    config = resolve_data(load_config(config_path, overrides))
    specs = block_specs(config)
    out.mkdir(parents=True, exist_ok=True)
    sets = [a for o in overrides for a in ("--set", o)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers",
                config_path,
                "--block",
                str(s.index),
                "--out",
                str(out / f"b{s.index}"),
                *sets,
            ],
            cwd=REPO,
            stdout=open(out / f"b{s.index}.log", "w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for s in specs
    ]
    if any(p.wait() for p in procs):
        raise SystemExit(f"a block failed: see {out}/b*.log")
    assemble_trained(config, out)


def assemble_trained(config, out: Path) -> None:
    """`out/b<i>/block_<i>.safetensors` (one `python -m workers` output per block) -> a run directory in `out`, as
    the service assembles one. Any task: the text and classification experiments use it too."""
    files = {s.index: out / f"b{s.index}" / block_file(s.index) for s in block_specs(config)}
    assemble_block_files(config, files, out)


def swapped(run_dir: Path, which: str, swaps: dict[int, Path]):
    """The run's assembled model with some blocks' weights taken from other files (an experiment: one block
    retrained differently); each file must hold a block for the same noise range."""
    from shared.assembly import load_block_denoiser

    model, manifest = load_assembled(run_dir, which)
    for index, path in swaps.items():
        block, meta = load_block_denoiser(path, which)
        entry = manifest["blocks"][index]
        if [meta["block"]["sigma_lo"], meta["block"]["sigma_hi"]] != [entry["sigma_lo"], entry["sigma_hi"]]:
            raise SystemExit(f"{path}: block range {meta['block']} is not block {index}'s")
        model.blocks[index] = block
    return model


@torch.no_grad()
def measure(
    run_dir: Path, num_per_class: int = 100, quick: bool = False, swaps: dict | None = None, steps: int | None = None
) -> dict:
    config = load_config(run_dir / "config.yaml")
    noise, info = config.noise, data_shape(config)
    ref = reference_stats(config, Settings.from_env().cache_dir)
    labels = class_labels(info.num_classes, num_per_class)
    shape = (len(labels), info.channels, info.image_size, info.image_size)
    models = {which: swapped(run_dir, which, swaps or {}) for which in ("ema", "raw")}

    def sigmas(steps: int, schedule: str) -> torch.Tensor:
        return step_sigmas(
            schedule=schedule, num_steps=steps, sigma_min=noise.sigma_min, sigma_max=noise.sigma_max, rho=7.0,
            p_mean=noise.log_mean, p_std=noise.p_std,
        )  # fmt: skip

    start = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    variants = []
    chosen = VARIANTS[:1] if quick else VARIANTS
    if steps is not None:  # the default sampler at another step count
        chosen = [(f"EMA, {steps} Euler steps, CFG 2, Karras", "ema", steps, 2.0, "euler", "karras")]
    for name, weights, num_steps, cfg, solver, schedule in chosen:
        grid = sigmas(num_steps, schedule)
        fn = guided(models[weights], cfg, info.num_classes)
        samples = SAMPLERS[solver](fn, grid[0] * start, grid, labels=labels)
        result = evaluate_samples(ref["classifier"], samples, labels, ref["test_images"])
        variants.append(
            {
                "variant": name,
                "fd": result["fd"],
                "class_accuracy": result["class_accuracy"],
                "speckles": speckles(samples),
            }
        )
        print(json.dumps(variants[-1]), file=sys.stderr, flush=True)
    if quick or steps is not None:
        return {"run_dir": str(run_dir), "swaps": {str(k): str(v) for k, v in (swaps or {}).items()},
                "speckles_real_test_digits": speckles(ref["test_images"]), "variants": variants}  # fmt: skip

    # The default sampler, step by step: speckles in the denoised estimate, and each block's D near the hand-overs.
    model, grid = models["ema"], sigmas(50, "karras")
    fn = guided(model, 2.0, info.num_classes)
    per_block = [guided(b, 2.0, info.num_classes) for b in model.blocks]
    bounds = model.boundaries[1:-1]
    z, steps = grid[0] * start, []
    for sigma, sigma_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        s = torch.full((len(z),), sigma)
        denoised = fn(z, s, labels)
        row = {"sigma": sigma, "block": int(model.route(s[:1])[0]), "speckles_denoised": speckles(denoised)}
        if any(b / 2.5 < sigma < b * 2.5 for b in bounds):
            row["speckles_denoised_by_block"] = [speckles(f(z, s, labels)) for f in per_block]
        steps.append(row)
        z = euler_step(z, denoised, sigma, sigma_next)
    mask = speckle_mask(z)
    p = config.model.patch_size
    where = mask.nonzero()[:, 2:]
    in_patch = torch.zeros(p, p, dtype=torch.long)
    for r, c in where.tolist():
        in_patch[r % p, c % p] += 1
    corners = sum(int(in_patch[r, c]) for r in (0, p - 1) for c in (0, p - 1))
    return {
        "run_dir": str(run_dir),
        "num_samples": len(labels),
        "speckles_real_test_digits": speckles(ref["test_images"]),
        "variants": variants,
        "steps": steps,
        "final_speckles_in_patch_position": in_patch.tolist(),
        "final_speckles_at_patch_corners": corners / max(1, len(where)),
        "patch_corner_share_of_pixels": 4 / (p * p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("config")
    t.add_argument("out", type=Path)
    t.add_argument("--set", dest="overrides", action="append", default=[])
    a = sub.add_parser("assemble", help="assemble blocks already trained into OUT/b<i>/ by `python -m workers`")
    a.add_argument("config")
    a.add_argument("out", type=Path)
    a.add_argument("--set", dest="overrides", action="append", default=[])
    m = sub.add_parser("measure")
    m.add_argument("run_dir", type=Path)
    m.add_argument("--num-per-class", type=int, default=100)
    m.add_argument("--quick", action="store_true", help="the default sampler only")
    m.add_argument("--swap", action="append", default=[], help="I=FILE: block I's weights from FILE")
    m.add_argument("--steps", type=int, help="the default sampler at this many Euler steps only")
    args = parser.parse_args()
    if args.command == "train":
        train(args.config, args.out, args.overrides)
    elif args.command == "assemble":
        assemble_trained(resolve_data(load_config(args.config, args.overrides)), args.out)
    else:
        swaps = {int(i): Path(f) for i, f in (item.split("=", 1) for item in args.swap)}
        print(json.dumps(measure(args.run_dir, args.num_per_class, args.quick, swaps, args.steps), indent=1))


if __name__ == "__main__":
    main()
