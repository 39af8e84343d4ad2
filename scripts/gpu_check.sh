#!/usr/bin/env bash
# GPU check: install the project, record the card, run
# `benchmark.py gpu --preset r50_ablation --quick` (figures: docs/results.md, "GPU").
# Run from anywhere on the GPU machine:
#
#     OUT=/some/dir bash scripts/gpu_check.sh        # OUT defaults to out/gpu_check
#     bash scripts/gpu_check.sh --set loss.fused=true --set sample.bf16=true
#
# Arguments are passed on to the benchmark (config overrides: the step and the sampler run
# with them as training and prediction would).
# Writes to $OUT: nvidia-smi.txt, torch.txt, pip_install.log, gpu_quick.log,
# gpu_quick.json (rewritten after every benchmark part, so a timeout keeps what was
# measured), nvidia-smi-log.csv (utilisation, memory, power, SM clock every 2 s).
# The timeouts keep the whole script under ~9 minutes: install 120 s, benchmark 400 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
start=$SECONDS

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version \
    --format=csv >> "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw,clocks.sm \
    --format=csv -l 2 > "$OUT/nvidia-smi-log.csv" 2>&1 &
smi_pid=$!
trap 'kill "$smi_pid" 2>/dev/null' EXIT

python - > "$OUT/torch.txt" 2>&1 <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
cat "$OUT/torch.txt"

# The package claims only the Python CI tests (3.11); this script runs pure torch code on
# whatever Python the GPU machine has. build/ and *.egg-info are gitignored, so they are not part of the copied tree; if the
# editable install still fails, a folder of links makes `pix2seqd.*` importable instead.
if ! timeout 120 python -m pip install -q --no-deps --no-build-isolation --ignore-requires-python -e . > "$OUT/pip_install.log" 2>&1; then
    echo "pip install failed (see pip_install.log); using a pix2seqd link folder on PYTHONPATH"
    links="$(mktemp -d)/pix2seqd"
    mkdir -p "$links"
    for top in platform models jobs sweeps; do ln -s "$PWD/$top" "$links/$top"; done
    export PYTHONPATH="$(dirname "$links")${PYTHONPATH:+:$PYTHONPATH}"
fi
python -c "import pix2seqd.platform.benchmarks.gpu_bench" || { echo "pix2seqd does not import"; exit 1; }
echo "setup done after $((SECONDS - start)) s"

timeout -k 15 400 python jobs/benchmark.py gpu --preset r50_ablation --quick \
    --json "$OUT/gpu_quick.json" "$@" 2>&1 | tee "$OUT/gpu_quick.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "benchmark stopped by its 400 s timeout; gpu_quick.json holds the parts that finished"
echo "benchmark exit $status; total $((SECONDS - start)) s"
exit "$status"
