"""Where in masking time a text run loses bits: the held-out ELBO integrand (bits per character) at fixed t, per run.

    python benchmarks/experiments/text_bits_by_time.py RUN [RUN ...] > bits.json
    python benchmarks/experiments/text_bits_by_time.py --times 0.0417,0.125 BLOCK.safetensors [...] > bits.json

For each run directory: its EMA weights assembled, 256 test sequences, t = 1/12 ... 12/12, each t routed to the block
that owns it (`shared.tasks.text.task.bits_by_time`, the same estimate as the run's `bpc_curve.png`). The mean over the
12 times approximates the run's BPC; where two runs differ says which block's slice makes the difference.

With block files (`python -m workers CONFIG --block I --out DIR` writes DIR/block_I.safetensors; an end-to-end
network is block 0 of the B = 1 plan): each file's EMA block alone at the given times (each must lie in its
range), 4 masks per sequence and time, on the same test sequences of `configs/text.yaml`'s corpus. This compares
one block with another trained differently, or with end-to-end on the same slice of t.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared.assembly import load_assembled, load_block_denoiser  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.tasks.text.data import load_corpus, sequences  # noqa: E402
from shared.tasks.text.task import bits_by_time  # noqa: E402

TIMES = [i / 12 for i in range(1, 13)]
NUM_SEQUENCES = 256


def measure(run_dir: Path) -> dict:
    config = load_config(run_dir / "config.yaml")
    model, manifest = load_assembled(run_dir, "ema")
    test = sequences(load_corpus(config.text).split("test"), config.text.seq_len)[:NUM_SEQUENCES]
    bits = bits_by_time(model, test, TIMES, seed=0, mask_id=model.blocks[0].mask_id)
    return {
        "run_dir": str(run_dir),
        "block_t_ranges": [[b["sigma_lo"], b["sigma_hi"]] for b in manifest["blocks"]],
        "bits": bits,
        "mean_bits": sum(bits) / len(bits),
    }


def measure_block(path: Path, times: list[float], test: torch.Tensor) -> dict:
    block, meta = load_block_denoiser(path, "ema")
    lo, hi = meta["block"]["sigma_lo"], meta["block"]["sigma_hi"]
    if not all(lo <= t <= hi for t in times):
        raise SystemExit(f"{path}: block range [{lo}, {hi}] does not hold every time of {times}")
    with torch.no_grad():
        bits = bits_by_time(block, test, times, seed=0, mask_id=block.mask_id, draws=4)
    return {"file": str(path), "block_t_range": [lo, hi], "bits": bits, "mean_bits": sum(bits) / len(bits)}


def main() -> None:
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    if args[0] == "--times":
        times = [float(t) for t in args[1].split(",")]
        config = load_config(REPO / "configs" / "text.yaml")
        test = sequences(load_corpus(config.text).split("test"), config.text.seq_len)[:NUM_SEQUENCES]
        print(json.dumps({"t": times, "blocks": [measure_block(Path(p), times, test) for p in args[2:]]}, indent=1))
        return
    print(json.dumps({"t": TIMES, "runs": [measure(Path(run)) for run in args]}, indent=1))


if __name__ == "__main__":
    main()
