"""Where in masking time a text run loses bits: the held-out ELBO integrand (bits per character) at fixed t, per run.

    python benchmarks/text_bits_by_time.py RUN [RUN ...] > bits.json

For each run directory: its EMA weights assembled, 256 test sequences, t = 1/12 ... 12/12, each t routed to the block
that owns it (`shared.tasks.text.bits_by_time`, the same estimate as the run's `bpc_curve.png`). The mean over the
12 times approximates the run's BPC; where two runs differ says which block's slice makes the difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.assembly import load_assembled  # noqa: E402
from shared.config import load_config  # noqa: E402
from shared.data.text import load_corpus, sequences  # noqa: E402
from shared.tasks.text import bits_by_time  # noqa: E402

TIMES = [i / 12 for i in range(1, 13)]
NUM_SEQUENCES = 256


def measure(run_dir: Path) -> dict:
    config = load_config(run_dir / "config.yaml")
    model, manifest = load_assembled(run_dir, "ema")
    test = sequences(load_corpus(config.text).split("test"), config.text.seq_len)[:NUM_SEQUENCES]
    bits = [float(b) for b in bits_by_time(model, test, TIMES, seed=0)]
    return {
        "run_dir": str(run_dir),
        "block_t_ranges": [[b["sigma_lo"], b["sigma_hi"]] for b in manifest["blocks"]],
        "bits": bits,
        "mean_bits": sum(bits) / len(bits),
    }


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(json.dumps({"t": TIMES, "runs": [measure(Path(run)) for run in sys.argv[1:]]}, indent=1))


if __name__ == "__main__":
    main()
