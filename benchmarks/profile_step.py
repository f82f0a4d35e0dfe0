"""Profile one block's training step and the sampling loop with torch.profiler; prints JSON (top ops by self CPU
time). `python benchmarks/profile_step.py [CONFIG]` — default the quickstart block 0."""

import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from shared.config import load_config
from shared.data import load_split
from shared.generate import class_labels, generate, step_sigmas
from shared.job import BlockJob
from shared.model import BlockNet
from shared.plan import block_specs
from shared.precond import Denoiser
from workers.reporting import NullReporter
from workers.train_block import train_block


def top_ops(prof, n=8):
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [
        {"op": e.key, "self_cpu_pct": round(100 * e.self_cpu_time_total / total, 1), "calls": e.count} for e in rows[:n]
    ]


def main(config_path="configs/quickstart.yaml"):
    torch.set_num_threads(1)
    config = load_config(
        config_path,
        [
            "train.steps_per_block=30",
            "train.log_every_steps=10",
            "train.checkpoint_every_steps=1000000",
            "train.preview_every_steps=0",
        ],
    )
    job = BlockJob(run_id="profile", config=config, block=block_specs(config)[0])
    data = load_split(config.data, "train")
    with profile(activities=[ProfilerActivity.CPU]) as train_prof:
        train_block(job, data=data, reporter=NullReporter())
    denoiser = Denoiser(BlockNet(job.net), config.noise.sigma_data).eval()
    sigmas = step_sigmas(
        schedule="karras", num_steps=10, sigma_min=0.002, sigma_max=80.0, rho=7.0, p_mean=-1.2, p_std=1.2
    )
    with profile(activities=[ProfilerActivity.CPU]) as sample_prof:
        generate(
            denoiser,
            labels=class_labels(10, 4),
            image_shape=(1, 28, 28),
            sigmas=sigmas,
            cfg_scale=2.0,
            null_label=10,
            sampler="euler",
            seed=0,
        )
    print(json.dumps({"train_step_top_ops": top_ops(train_prof), "sampling_top_ops": top_ops(sample_prof)}, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
