"""Performance benchmarks that print JSON: memory (fresh process per case) and sampling cost per Euler step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from shared.assembly import AssembledDenoiser, load_assembled
from shared.config import EQUAL_STEPS, Config
from shared.model import BlockNet, NetSpec
from shared.plan import block_params, block_specs, boundaries, net_spec
from shared.precond import Denoiser
from shared.sampling import euler_step, guided

# Fixed glibc mmap threshold: freed large buffers go back to the OS, so resident memory tracks live tensors.
PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def probe(config_path: Path, case: str, block: int = 0, steps: int = 3, overrides: list[str] = ()) -> dict:
    args = [
        sys.executable,
        "-m",
        "benchmarks.memory_probe",
        str(config_path),
        "--case",
        case,
        "--block",
        str(block),
        "--steps",
        str(steps),
        *(a for o in overrides for a in ("--set", o)),
    ]
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **PROBE_ENV}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def private_params(config: Config) -> int:
    """Parameters a block owns besides its layers: embeddings, noise embedder, head."""
    return block_params(config, 0)


def bench_memory(config_path: Path, config: Config, overrides: list[str] = ()) -> dict:
    e2e = probe(config_path, "e2e", overrides=overrides)
    e2e_ckpt = probe(config_path, "e2e_checkpointed", overrides=overrides)
    blocks = [probe(config_path, "block", block=s.index, overrides=overrides) for s in block_specs(config)]
    block_bytes = [b["measured_bytes"] for b in blocks]
    return {
        "benchmark": "memory",
        "machine": machine(),
        "config": str(config_path),
        "overrides": list(overrides),
        "num_blocks": config.blocks.num_blocks,
        "e2e_bytes": e2e["measured_bytes"],
        "e2e_checkpointed_bytes": e2e_ckpt["measured_bytes"],
        "block_bytes": block_bytes,
        "ratio": e2e["measured_bytes"] / max(block_bytes),
        "ratio_vs_checkpointed": e2e_ckpt["measured_bytes"] / max(block_bytes),
        "analytic": {
            "e2e": e2e["analytic"],
            "e2e_checkpointed": e2e_ckpt["analytic"],
            "blocks": [b["analytic"] for b in blocks],
            "ratio": e2e["analytic"]["total_bytes"] / max(b["analytic"]["total_bytes"] for b in blocks),
        },
        "private_params_per_block": private_params(config),
        "private_overhead_fraction": config.blocks.num_blocks * private_params(config) / e2e["analytic"]["params"],
        "method": "fresh process per case; "
        + (
            "torch.cuda.max_memory_allocated"
            if machine()["device"] != "cpu"
            else "peak RSS (VmHWM reset after imports, data loading and a warm-up) minus RSS at that point; "
            "glibc MALLOC_MMAP_THRESHOLD_=65536"
        )
        + "; float32; AdamW + EMA",
    }


def _time_euler_steps(
    denoiser, z: torch.Tensor, sigmas: list[float], labels: torch.Tensor, null_label: int, cfg_scale: float
) -> float:
    """Seconds per Euler step, timed on a second pass: the first pass warms every block (kernels, allocator)."""
    fn = guided(denoiser, cfg_scale, null_label)
    sync = torch.cuda.synchronize if z.is_cuda else (lambda: None)

    def one_pass() -> float:
        x = z
        sync()
        started = time.perf_counter()
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x = euler_step(x, fn(x, torch.full((len(x),), sigma, device=x.device), labels), sigma, sigma_next)
        sync()
        return (time.perf_counter() - started) / (len(sigmas) - 1)

    with torch.no_grad():
        one_pass()
        return one_pass()


def bench_sampling(config: Config, run_dir: Path | None, *, batch: int, num_steps: int) -> dict:
    """Seconds per Euler step: assembled blocks (each step runs ONE block) vs the end-to-end network."""
    if run_dir is not None:
        assembled, _ = load_assembled(run_dir)
    else:
        nets = [
            Denoiser(BlockNet(net_spec(config, s.num_layers)), config.noise.sigma_data).eval()
            for s in block_specs(config)
        ]
        assembled = AssembledDenoiser(nets, boundaries(config))
    e2e_config = config.with_overrides(["train.mode=end_to_end"])
    e2e = Denoiser(BlockNet(net_spec(e2e_config, config.model.num_layers)), config.noise.sigma_data).eval()
    spec: NetSpec = net_spec(config, 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assembled, e2e = assembled.to(device), e2e.to(device)
    g = torch.Generator().manual_seed(0)
    z = config.noise.sigma_max * torch.randn(batch, spec.channels, spec.image_size, spec.image_size, generator=g)
    z, labels = z.to(device), (torch.arange(batch) % spec.num_classes).to(device)
    sigmas = torch.logspace(
        torch.log10(torch.tensor(config.noise.sigma_max)),
        torch.log10(torch.tensor(config.noise.sigma_min)),
        num_steps + 1,
    ).tolist()
    kw = dict(labels=labels, null_label=spec.num_classes, cfg_scale=config.sample.cfg_scale)
    t_blocks = _time_euler_steps(assembled, z, sigmas, **kw)
    t_e2e = _time_euler_steps(e2e, z, sigmas, **kw)
    return {
        "benchmark": "sampling",
        "machine": machine(),
        "num_blocks": config.blocks.num_blocks,
        "batch": batch,
        "cfg_scale": config.sample.cfg_scale,
        "num_steps": num_steps,
        "threads": torch.get_num_threads(),
        "run_dir": str(run_dir) if run_dir else None,
        "blockwise_s_per_step": t_blocks,
        "e2e_s_per_step": t_e2e,
        "ratio": t_e2e / t_blocks,
        "blockwise_samples_per_s": batch / (t_blocks * num_steps),
        "e2e_samples_per_s": batch / (t_e2e * num_steps),
    }


def write_result(result: dict, name: str, results_dir: Path = Path("benchmarks/results")) -> Path:
    path = Path(results_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


# Dense bf16 peak FLOP/s by device name fragment (vendor datasheets); MFU is reported against these.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def train_flops_per_step(config: Config, num_layers: int) -> float:
    """Analytic matmul FLOPs of one training step (forward x 3): token-wise linears + attention scores."""
    spec = net_spec(config, num_layers)
    d, t = spec.hidden_size, (spec.image_size // spec.patch_size) ** 2
    per_sample = num_layers * (2 * t * (4 + 2 * spec.mlp_ratio) * d * d + 4 * t * t * d)
    return 3.0 * config.train.batch_size * per_sample


def bench_throughput(config: Config, *, steps: int) -> dict:
    """Training steps/s of one block and of the end-to-end net, in this process (no Ray), plus MFU on GPU."""
    from shared.data import load_split
    from shared.job import BlockJob
    from workers.reporting import ListReporter
    from workers.train_block import train_block

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    half = max(1, steps // 2)
    timed = _variant_config(
        config,
        [
            f"train.steps_per_block={2 * half}",
            EQUAL_STEPS,
            f"train.log_every_steps={half}",
            "train.checkpoint_every_steps=1000000",
            "train.preview_every_steps=0",
        ],
    )
    d = timed.data
    data = load_split(d, "train")
    out = {
        "benchmark": "throughput",
        "machine": machine(),
        "precision": timed.train.precision,
        "compile": timed.train.compile,
        "compile_mode": timed.train.compile_mode if timed.train.compile else None,
        "batch_size": timed.train.batch_size,
        "timed_steps": half,
    }
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in machine()["device"]), None)
    for case, case_config in (
        ("block", timed),
        ("e2e", _variant_config(timed, ["train.mode=end_to_end"])),
    ):
        spec = block_specs(case_config)[0]
        reporter = ListReporter()
        train_block(
            BlockJob(run_id="bench", config=case_config, block=spec), data=data, reporter=reporter, device=device
        )
        steps_per_s = reporter.metrics[-1]["steps_per_s"]  # the second half: warm-up and compile excluded
        flops = train_flops_per_step(case_config, spec.num_layers) * steps_per_s
        out[case] = {
            "layers": spec.num_layers,
            "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * case_config.train.batch_size,
            "achieved_tflops": flops / 1e12,
            "mfu_vs_bf16_peak": flops / peak if peak else None,
            "compile_s": reporter.metrics[-1].get("compile_s"),  # the first step's time, compile included
        }
    out["e2e_step_time_over_block"] = out["block"]["steps_per_s"] / out["e2e"]["steps_per_s"]
    return out


def _variant_config(config: Config, overrides: list[str]) -> Config:
    return config.with_overrides(overrides)
