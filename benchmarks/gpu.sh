#!/usr/bin/env bash
# GPU measurements for DiT-S- and DiT-B-size configs: peak training memory per case, training throughput and MFU
# (fp32 and bf16), and sampling cost per Euler step. JSON goes to the folder given as the first argument.
#   benchmarks/gpu.sh OUT_DIR            on a CUDA machine (CUDA build of torch==2.13.0 in .venv; README)
#   TINY=1 benchmarks/gpu.sh OUT_DIR     the same commands on a tiny DiT-S config, on CPU (through
#                                        benchmarks/device_check.sh in tests/test_bench_perf.py)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/gpu.sh OUT_DIR}
mkdir -p "$OUT"
BIN=${BIN:-.venv/bin}
STEPS=40
SAMPLE_BATCH=256
SET=()
CONFIGS=(configs/dit_s.yaml configs/dit_b.yaml)
COMPILE_MODES=(default reduce-overhead)
if [ "${TINY:-0}" = 1 ]; then
  CONFIGS=(configs/dit_s.yaml)  # the DiT-B run is the same commands at another width
  STEPS=4
  COMPILE_MODES=(default)  # CUDA graphs need a GPU
  SAMPLE_BATCH=4
  SET=(--set model.num_layers=4 --set model.hidden_size=32 --set model.num_heads=2 --set model.patch_size=7
       --set train.batch_size=4 --set blocks.num_blocks=2)
else
  [ "$($BIN/python -c 'import torch; print(torch.cuda.is_available())')" = True ] \
    || { echo "no CUDA device visible to torch (TINY=1 runs the CPU check)" >&2; exit 1; }
fi
$BIN/python -c "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available(),
  'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}))" > "$OUT/device.json"
for cfg in "${CONFIGS[@]}"; do
  name=$(basename "$cfg" .yaml); name=${name//_/-}
  $BIN/dblocks bench memory "$cfg" "${SET[@]}" --results-dir "$OUT" --json > /dev/null
  $BIN/dblocks bench throughput "$cfg" "${SET[@]}" --steps "$STEPS" --results-dir "$OUT" --json > /dev/null
  $BIN/dblocks bench throughput "$cfg" "${SET[@]}" --set train.precision=bf16 --set name="$name-bf16" \
    --steps "$STEPS" --results-dir "$OUT" --json > /dev/null
  for mode in "${COMPILE_MODES[@]}"; do  # torch.compile, then CUDA graphs for the launch-bound small blocks
    $BIN/dblocks bench throughput "$cfg" "${SET[@]}" --set train.precision=bf16 --set train.compile=true \
      --set train.compile_mode=$mode --set name="$name-bf16-compile-$mode" --steps "$STEPS" --results-dir "$OUT" \
      --json > /dev/null
  done
  $BIN/dblocks bench sampling --config "$cfg" "${SET[@]}" --batch "$SAMPLE_BATCH" --steps 10 --results-dir "$OUT" \
    --json > /dev/null
done
ls "$OUT"
