"""Pixel space vs latent space on the shapes at 64 px, B = 3 at equal wall time (docs/latent.md):
`python -m benchmarks.latent --json` (about 80 minutes on the 2-core CPU machine; `--quick` for a smoke run).

1. The shapes at 64 px (`make_shapes.py --size 64`) and a small VAE trained on them (`train_vae.py`), each made
   once in the work folder and reused.
2. The encode (`shared/latent/encode.py`), timed: images per second and the cache's size.
3. Both models at the same wall time per block: each config's step rate is measured on its block 0, and its steps
   set to fill `--minutes-per-block`. Pixel: configs/shapes.yaml at 64 px, patch 8 (64 tokens); latent:
   configs/shapes_latent.yaml, 16x16x4 latents, patch 2 (64 tokens). Trained in this process, no Ray (the training
   code is the workers').
4. Both judged alike, on images: one classifier trained on the real 64 px training images gives the features of FD
   and the class accuracy; each model's samples (the latent model's decoded by the VAE) against the real test
   images. Beside them, the VAE's floor: its reconstructions of the test images, judged the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.local_run import main as local_run  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.data import load_split  # noqa: E402
from shared.evaluation import evaluate_samples  # noqa: E402
from shared.job import BlockJob  # noqa: E402
from shared.latent.encode import EncodeJob, encode_source  # noqa: E402
from shared.latent.vae import Vae  # noqa: E402
from shared.plan import block_specs  # noqa: E402
from shared.tasks import resolve_data, task_for  # noqa: E402
from shared.tasks.image_generation.evaluation import reference_stats  # noqa: E402
from shared.tasks.image_generation.samples import sample_run  # noqa: E402
from workers.reporting import NullReporter  # noqa: E402
from workers.train_block import train_block  # noqa: E402

SIZE = 64


def made(work: Path, per_class: int, vae_steps: int) -> tuple[Path, Path, dict]:
    """The shapes and the VAE, made once in `work` (the VAE's report kept beside it)."""
    shapes, vae = work / "shapes64", work / "vae"
    if not shapes.is_dir():
        run = [sys.executable, str(ROOT / "benchmarks/make_shapes.py"), str(shapes), "--size", str(SIZE)]
        subprocess.run([*run, "--per-class", str(per_class)], check=True)
    report_path = work / "vae.json"
    if not report_path.is_file():
        run = [sys.executable, str(ROOT / "benchmarks/train_vae.py"), str(shapes), "--out", str(vae), "--json"]
        out = subprocess.run([*run, "--size", str(SIZE), "--steps", str(vae_steps)], check=True, capture_output=True)
        report_path.write_text(out.stdout.decode())
    return shapes, vae, json.loads(report_path.read_text())


def encoded(work: Path, shapes: Path, vae: Path) -> tuple[Path, dict]:
    latents, report_path = work / "latents", work / "encode.json"
    if not report_path.is_file():
        started = time.perf_counter()
        manifest = encode_source(EncodeJob(source=str(shapes), image_size=SIZE), Vae.load(vae), latents)
        seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in latents.glob("part-*.npz"))
        report = {"images": manifest["num_records"], "seconds": seconds, "images_per_s": manifest["num_records"] /
                  seconds, "cache_bytes": size, "bytes_per_image": size / manifest["num_records"]}  # fmt: skip
        report_path.write_text(json.dumps(report))
    return latents, json.loads(report_path.read_text())


def step_rate(config, steps: int = 20) -> float:
    """Steps per second of the config's block 0 (1 thread, as its worker runs it), after 3 warm-up steps."""
    torch.set_num_threads(1)
    spec = block_specs(config)[0]
    rates = []
    for count in (3, steps):
        timed = config.with_overrides([f"train.steps_per_block={count}", "train.checkpoint_every_steps=100000",
                                       "train.preview_every_steps=0"])  # fmt: skip
        job = BlockJob(run_id="rate", config=timed, block=block_specs(timed)[spec.index])
        started = time.perf_counter()
        train_block(job, data=task_for(timed).train_batches(timed, seed=0), reporter=NullReporter())
        rates.append(count / (time.perf_counter() - started))
    return rates[-1]


def judged(run_dir: Path, config, ref: dict, num_samples: int) -> dict:
    samples, labels = sample_run(run_dir, config, num_per_class=max(1, num_samples // 4))
    return evaluate_samples(ref["classifier"], samples, labels, ref["test_images"])


def vae_floor(vae: Path, pixel_config, ref: dict) -> dict:
    """The VAE's reconstructions of the test images, judged as samples are: no latent model scores below."""
    model = Vae.load(vae)
    test, labels = load_split(pixel_config.data, "test")
    recon = torch.cat([model.decode(model.encode(part)) for part in test.split(256)])
    return {**evaluate_samples(ref["classifier"], recon, labels, ref["test_images"]),
            "mse": float(((recon - test) ** 2).mean())}  # fmt: skip


def trained(
    name: str, config_path: Path, overrides: list[str], work: Path, minutes: float, quick: bool, seed: int = 0
) -> dict:
    overrides = [*overrides, f"train.seed={seed}", f"sample.seed={seed}"]
    config = resolve_data(load_config(config_path, overrides))
    rate = step_rate(config, steps=3 if quick else 20)
    steps = 2 if quick else max(10, round(minutes * 60 * rate))
    run_dir = work / (f"run-{name}" if seed == 0 else f"run-{name}-s{seed}")
    sets = [*overrides, f"train.steps_per_block={steps}"]
    started = time.perf_counter()
    code = local_run([str(config_path), "--out", str(run_dir), "--device", "cpu", "--num-samples", "0",
                      *[a for s in sets for a in ("--set", s)]])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"{name}: training failed ({code})")
    resolved = load_config(run_dir / "config.yaml")
    net = BlockJob(run_id="tokens", config=resolved, block=block_specs(resolved)[0]).net
    return {
        "config": str(config_path.relative_to(ROOT)),
        "overrides": overrides,
        "steps_per_s": rate,
        "steps_per_block": steps,
        "train_s": time.perf_counter() - started,
        "run_dir": str(run_dir),
        "tokens": task_for(resolved).tokens_per_example(net),
        "resolved": resolved,
    }


def dit_xl2_memory(batch_sizes: tuple[int, ...] = (32, 256), num_blocks: int = 4) -> dict:
    """DiT-XL/2 on 256 px latents (32x32x4, 256 tokens, 1,000 classes): the analytic training memory (fp32 weights,
    grads, 2 AdamW moments, EMA, and the activations kept for backward; benchmarks/memory_probe.py) of the whole
    network and of one of `num_blocks` blocks. No data is read: the shape is the latents'."""
    from benchmarks.memory_probe import analytic_bytes
    from shared.config import parse_config
    from shared.plan import block_params

    model = {"num_layers": 28, "hidden_size": 1152, "num_heads": 16, "patch_size": 2}
    data = {"source": "/latents", "format": "latents", "channels": 4, "image_size": 32, "num_classes": 1000}
    config = parse_config({"data": data, "model": model, "blocks": {"num_blocks": num_blocks}})
    out = {"model": model, "latents": [4, 32, 32], "tokens": 256, "num_blocks": num_blocks, "cases": []}
    for batch in batch_sizes:
        for name, layers in (("end_to_end", 28), ("block", 28 // num_blocks)):
            params = block_params(config, layers)
            account = analytic_bytes(params, batch=batch, tokens=256, width=1152, heads=16, num_layers=layers,
                                     mlp_ratio=4.0, checkpointed=False)  # fmt: skip
            out["cases"].append({"case": name, "batch": batch, "layers": layers, **account,
                                 "total_gib": account["total_bytes"] / 2**30})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "latent-bench")
    parser.add_argument("--minutes-per-block", type=float, default=8.0)
    parser.add_argument("--per-class", type=int, default=1500)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few steps of everything")
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (train and sample); data and VAE shared")
    parser.add_argument("--out", type=Path, default=None, help="JSON result (default benchmarks/results/...)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dit-xl2-memory", action="store_true", help="only the analytic DiT-XL/2 latent memory")
    args = parser.parse_args(argv)
    if args.dit_xl2_memory:
        report = dit_xl2_memory()
        out = args.out or ROOT / "benchmarks" / "results" / "memory-dit-xl2-latent-analytic.json"
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2) if args.json else f"wrote {out}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    shapes, vae, vae_report = made(args.work, args.per_class, args.vae_steps)
    latents, encode_report = encoded(args.work, shapes, vae)
    pixel_sets = [f"data.source={shapes}", "model.patch_size=8"]
    runs = {
        "pixel": trained(
            "pixel", ROOT / "configs/shapes.yaml", pixel_sets, args.work, args.minutes_per_block, args.quick, args.seed
        ),  # fmt: skip
        "latent": trained(
            "latent",
            ROOT / "configs/shapes_latent.yaml",
            [f"data.source={latents}"],
            args.work,
            args.minutes_per_block,
            args.quick,
            args.seed,
        ),  # fmt: skip
    }
    pixel_config = runs["pixel"]["resolved"]
    ref = reference_stats(pixel_config, args.work / "cache")
    for name, run in runs.items():
        run["eval"] = judged(Path(run["run_dir"]), run.pop("resolved"), ref, args.num_samples)
    report = {
        "benchmark": "latent",
        "image_size": SIZE,
        "minutes_per_block": args.minutes_per_block,
        "seed": args.seed,
        "quick": args.quick,
        "vae": vae_report,
        "encode": encode_report,
        "vae_floor": vae_floor(vae, pixel_config, ref),
        "fd_floor": ref["fd_floor"],
        "classifier_test_accuracy": ref["classifier_test_accuracy"],
        "runs": runs,
    }
    name = "latent-shapes64-quick" if args.quick else "latent-shapes64" + (f"-seed{args.seed}" if args.seed else "")
    out = args.out or ROOT / "benchmarks" / "results" / f"{name}-cpu.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2) if args.json else f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
