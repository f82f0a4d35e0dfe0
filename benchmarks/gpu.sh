#!/usr/bin/env bash
# GPU measurements (memory per case, sampling cost per Euler step) for DiT-S and DiT-B widths; JSON under
# benchmarks/results/. Needs a CUDA build of torch==2.13.0 in .venv (see README, "GPU install").
# Not yet run on a GPU by this project: the result files appear once it has been.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
python_has_cuda=$($BIN/python -c "import torch; print(torch.cuda.is_available())")
[ "$python_has_cuda" = "True" ] || { echo "no CUDA device visible to torch" >&2; exit 1; }
for cfg in configs/dit_s.yaml configs/dit_b.yaml; do
  $BIN/dblocks bench memory "$cfg" --json
  $BIN/dblocks bench sampling --config "$cfg" --batch 256 --steps 20 --json
done
