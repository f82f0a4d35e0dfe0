#!/usr/bin/env bash
# The whole GPU check in one command, for a lent GPU machine whose Python has CUDA torch but neither Ray nor this
# project installed: benchmarks/gpu.sh (memory, throughput fp32/bf16, sampling for DiT-S and DiT-B), then the
# quickstart trained block after block in one process (benchmarks/local_run.py) in bf16 and fp32, each evaluated.
# Writes three files to OUT_DIR, named as benchmarks/README.md says (<benchmark>-<case>-<device>):
# gpu-dit-<device>.json (every gpu.sh result in one object), local-run-quickstart-bf16-<device>.json and
# local-run-quickstart-fp32-<device>.json; <device> is the GPU's model (h100, h200, ...) or cpu.
#   benchmarks/device_check.sh OUT_DIR             PY=python3 (the machine's), wheels from .whl/ if present
#   TINY=1 PY=.venv/bin/python benchmarks/device_check.sh OUT_DIR     the same on CPU, tiny, no evaluation
#   (tests/test_bench_perf.py runs that before any GPU time is spent)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/device_check.sh OUT_DIR}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -d .whl ] && [ "${TINY:-0}" != 1 ]; then  # pydantic, typer, mlxtend... where the machine lacks them (README "GPU check")
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dblocks-site .whl/*.whl
  export PYTHONPATH=/tmp/dblocks-site:$PWD
else
  export PYTHONPATH=$PWD
fi
SHIMS=$(mktemp -d)
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v "$PY")" > "$SHIMS/python"
printf '#!/bin/sh\nexec %s -m coordinator.cli "$@"\n' "$(command -v "$PY")" > "$SHIMS/dblocks"
chmod +x "$SHIMS/python" "$SHIMS/dblocks"
export BIN=$SHIMS DBLOCKS_CACHE_DIR=${DBLOCKS_CACHE_DIR:-$(mktemp -d)}

RAW=$(mktemp -d)
start=$(date +%s)
bash benchmarks/gpu.sh "$RAW" || echo "gpu.sh failed: exit $?" >&2
echo "gpu.sh: $(( $(date +%s) - start )) s" >&2
$PY - "$RAW" "$OUT" <<'EOF'
import json, pathlib, re, sys
raw, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
results = {p.stem: json.loads(p.read_text()) for p in sorted(raw.glob("*.json"))}
device = results.get("device", {}).get("device", "unknown").lower()
model = re.search(r"\b[a-z]{1,2}\d{2,4}\b", device)  # "nvidia h200" -> h200
name = model.group(0) if model else re.sub(r"[^a-z0-9]+", "-", device).strip("-")
(out / f"gpu-dit-{name}.json").write_text(json.dumps(results, indent=2))
(out / ".device").write_text(name)
print(f"{len(results)} results -> gpu-dit-{name}.json")
EOF
DEVICE=$(cat "$OUT/.device" 2>/dev/null || echo unknown)
rm -f "$OUT/.device"

QUICK=()
SAMPLES=1000
if [ "${TINY:-0}" = 1 ]; then
  QUICK=(--set train.steps_per_block=10 --set "train.block_step_scale={}" --set train.batch_size=8 --device cpu)
  SAMPLES=0  # the evaluation trains its classifier for minutes on CPU; tests/test_ray_integration.py runs eval
fi
for precision in bf16 fp32; do
  start=$(date +%s)
  $PY benchmarks/local_run.py configs/quickstart.yaml --out "$(mktemp -d)/quickstart-$precision" \
    --set train.precision=$precision "${QUICK[@]}" --num-samples $SAMPLES --cache-dir "$DBLOCKS_CACHE_DIR" \
    > "$OUT/local-run-quickstart-$precision-$DEVICE.json" || echo "quickstart $precision failed: exit $?" >&2
  echo "quickstart $precision: $(( $(date +%s) - start )) s" >&2
done
ls -la "$OUT"
