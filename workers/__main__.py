"""Train one block locally, without Ray: `python -m workers CONFIG --block I --out DIR [--set ...]`.

Useful to debug one block; writes DIR/block_<I>.safetensors and DIR/metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from shared.config import ConfigError, load_config
from shared.data import DataError
from shared.job import BlockJob
from shared.tasks import resolve_data, task_for
from workers.reporting import ListReporter
from workers.train_block import train_block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--block", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        config = resolve_data(load_config(args.config, args.overrides))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from shared.plan import block_specs  # the plan is pure; no Ray or Redis is touched

    specs = block_specs(config)
    if not 0 <= args.block < len(specs):
        print(f"error: --block {args.block}: the plan has blocks 0..{len(specs) - 1}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, int(config.resources.cpus_per_block)))
    args.out.mkdir(parents=True, exist_ok=True)
    reporter = ListReporter(args.out / "checkpoints")
    job = BlockJob(run_id="local", config=config, block=specs[args.block])
    train_block(job, data=task_for(config).train_batches(config, seed=job.seed), reporter=reporter)
    shutil.copyfile(reporter.latest_checkpoint / "block.safetensors", args.out / f"block_{args.block}.safetensors")
    (args.out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in reporter.metrics))
    print(json.dumps(reporter.metrics[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
