"""Train every block of a config in one process, one after another, on one device, with no Ray or Redis; assemble
the run directory exactly as the service does and evaluate it. Prints JSON (per-block step rate, peak memory,
train time; FD and class accuracy; accuracy for classification; bits per character for text).

The GPU check uses it (benchmarks/gpu.sh QUICKSTART=1): a GPU machine here has torch but no Ray, and the numbers it
measures are the worker's training loop and the sampler, which do not depend on how a block was dispatched.

    python benchmarks/local_run.py configs/quickstart.yaml --out /tmp/q --device cuda --set train.precision=bf16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coordinator.artefacts.assemble import assemble, block_file  # noqa: E402
from coordinator.records import BlockRecord, State  # noqa: E402
from shared.checkpoint import atomic_write_text, sha256_file  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.job import BlockJob  # noqa: E402
from shared.plan import block_specs, boundaries  # noqa: E402
from shared.tasks import resolve_data, task_for  # noqa: E402
from shared.tasks.base import EvalOptions  # noqa: E402
from shared.tasks.outputs import outputs_for  # noqa: E402
from workers.reporting import ListReporter  # noqa: E402
from workers.train_block import train_block  # noqa: E402


def assemble_block_files(config, files: dict[int, Path], run_dir: Path, steps: dict[int, int] | None = None) -> None:
    """One trained block file per block of the plan -> `run_dir` assembled exactly as the service assembles a run
    (its config, block files with their checksums, manifest, merged weights). `steps`: each block's last step
    (default: its planned steps)."""
    specs, records = block_specs(config), []
    for spec in specs:
        target = run_dir / block_file(spec.index)
        if files[spec.index].resolve() != target.resolve():
            shutil.copyfile(files[spec.index], target)
        records.append(
            BlockRecord(
                index=spec.index,
                state=State.SUCCEEDED,
                attempt=1,
                step=(steps or {}).get(spec.index, config.train.steps_for(spec.index)),
                weights_file=target.name,
                sha256=sha256_file(target),
            )
        )
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    assemble(config, specs, boundaries(config), records, run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--out", type=Path, required=True, help="run directory to create")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--num-samples", type=int, default=1000, help="samples for the evaluation (0: skip it)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the evaluation keeps its classifier")
    args = parser.parse_args(argv)
    config = resolve_data(load_config(args.config, args.overrides))
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(config.resources.cpus_per_block)))
    run_dir = args.out
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    specs, files, steps, blocks = block_specs(config), {}, {}, []
    started = time.perf_counter()
    for spec in specs:
        reporter = ListReporter(run_dir / ".checkpoints" / str(spec.index))
        job = BlockJob(run_id=run_dir.name, config=config, block=spec)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        block_started = time.perf_counter()
        data = task_for(config).train_batches(config, seed=job.seed)
        final = train_block(job, data=data, reporter=reporter, device=device)
        wall_s = time.perf_counter() - block_started
        files[spec.index] = run_dir / block_file(spec.index)
        steps[spec.index] = final["step"]
        shutil.copyfile(reporter.latest_checkpoint / "block.safetensors", files[spec.index])
        rates = [m["steps_per_s"] for m in reporter.metrics if "steps_per_s" in m]
        blocks.append(
            {
                "block": spec.index,
                "steps": final["step"],
                "final_loss": final["loss"],
                "train_s": round(final["train_s"], 2),
                "wall_s": round(wall_s, 2),
                "steps_per_s_last_window": round(rates[-1], 2),
                "steps_per_s_mean": round(final["step"] / final["train_s"], 2),
                "peak_memory_bytes": final["peak_memory_bytes"],
            }
        )
        print(json.dumps(blocks[-1]), file=sys.stderr, flush=True)
    train_s = time.perf_counter() - started
    shutil.rmtree(run_dir / ".checkpoints", ignore_errors=True)
    assemble_block_files(config, files, run_dir, steps)
    report = {
        "config": args.config,
        "overrides": args.overrides,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "precision": config.train.precision,
        "num_blocks": len(specs),
        "steps_per_block": config.train.steps_per_block,
        "batch_size": config.train.batch_size,
        "train_s_all_blocks_sequential": round(train_s, 2),
        "blocks": blocks,
    }
    if args.num_samples:
        eval_started = time.perf_counter()
        options = EvalOptions(num_samples=args.num_samples, cache_dir=args.cache_dir or run_dir / ".cache")
        result = outputs_for(config).evaluate(run_dir, config, options)
        report["eval"] = {k: v for k, v in result.items() if not isinstance(v, list)}  # the numbers, not curves
        report["eval_s"] = round(time.perf_counter() - eval_started, 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
