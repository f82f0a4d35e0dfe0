"""Peak training memory of one case, measured in THIS fresh process: `python -m benchmarks.memory_probe ...`.

Cases: `block` (one DiffusionBlocks block, as its worker runs it), `e2e` (the whole network),
`e2e_checkpointed` (the whole network with activation checkpointing). Prints one JSON line:
measured bytes = peak resident memory during training minus the resident memory after imports and data loading
(Linux: VmHWM is reset through /proc/self/clear_refs before training), beside an analytic account.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from shared.config import EQUAL_STEPS, load_config
from shared.job import BlockJob
from shared.tasks import resolve_data, task_for
from workers.reporting import NullReporter
from workers.train_block import train_block

BYTES = 4  # float32


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def analytic_bytes(
    num_params: int,
    *,
    batch: int,
    tokens: int,
    width: int,
    heads: int,
    num_layers: int,
    mlp_ratio: float,
    checkpointed: bool,
) -> dict:
    """Weights + grads + 2 AdamW moments + EMA copy, and activations saved for backward (float32)."""
    state = 5 * num_params * BYTES
    per_layer = batch * tokens * ((10 + 2 * mlp_ratio) * width + 2 * heads * tokens) * BYTES
    boundary = batch * tokens * width * BYTES  # what a checkpointed layer keeps
    activations = num_layers * boundary + per_layer if checkpointed else num_layers * per_layer
    return {
        "params": num_params,
        "state_bytes": state,
        "activation_bytes": activations,
        "total_bytes": state + activations,
    }


def warm_up(config, device: torch.device) -> None:
    """Train a 1-layer, 32-wide block for 2 steps (with a checkpoint), so that code pages, thread pools and
    allocator arenas that any training touches are already resident in the baseline."""
    tiny = load_config_like(
        config,
        [
            "model.num_layers=1",
            "blocks.num_blocks=1",
            "blocks.layers=null",
            "model.hidden_size=32",
            "model.num_heads=2",
            "train.mode=end_to_end",
            "train.steps_per_block=2",
            EQUAL_STEPS,
            "train.batch_size=4",
            "init={}",  # random weights: a checkpoint the config starts from fits its own shape, not this one
        ],
    )
    from shared.plan import block_specs

    train_block(
        BlockJob(run_id="warmup", config=tiny, block=block_specs(tiny)[0]),
        data=task_for(tiny).train_batches(tiny, seed=0),
        reporter=NullReporter(),
        device=device,
    )


def load_config_like(config, overrides: list[str]):
    return config.with_overrides(overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_probe")
    parser.add_argument("config")
    parser.add_argument("--case", choices=["block", "e2e", "e2e_checkpointed"], required=True)
    parser.add_argument("--block", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    overrides = [
        *args.overrides,
        f"train.steps_per_block={args.steps}",
        EQUAL_STEPS,
        "train.checkpoint_every_steps=100000",
        "train.log_every_steps=100000",
        "train.warmup_steps=0",
    ]
    if args.case != "block":
        overrides += ["train.mode=end_to_end", f"train.activation_checkpointing={args.case == 'e2e_checkpointed'}"]
    config = resolve_data(load_config(args.config, overrides))
    from shared.plan import block_params, block_specs

    spec = block_specs(config)[args.block if args.case == "block" else 0]
    job = BlockJob(run_id="memprobe", config=config, block=spec)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = task_for(config).train_batches(config, seed=job.seed)
    warm_up(config, device)
    if device.type == "cuda":  # GPU: the allocator's own peak, from zero
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        train_block(job, data=data, reporter=NullReporter(), device=device)
        measured = torch.cuda.max_memory_allocated(device) - baseline
    else:  # CPU: peak resident memory over the baseline after imports, data and warm-up
        baseline = _status("VmRSS")
        reset_peak()
        train_block(job, data=data, reporter=NullReporter())
        measured = _status("VmHWM") - baseline
    net = job.net
    analytic = analytic_bytes(
        block_params(config, net.num_layers),
        batch=config.train.batch_size,
        tokens=task_for(config).tokens_per_example(net),
        width=net.hidden_size,
        heads=net.num_heads,
        num_layers=net.num_layers,
        mlp_ratio=net.mlp_ratio,
        checkpointed=config.train.activation_checkpointing,
    )
    print(
        json.dumps(
            {
                "case": args.case,
                "device": device.type,
                "block": spec.index if args.case == "block" else None,
                "layers": spec.layers,
                "measured_bytes": measured,
                "baseline_bytes": baseline,
                "analytic": analytic,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
