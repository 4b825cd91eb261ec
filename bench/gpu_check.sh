#!/usr/bin/env bash
# Everything to check on a GPU machine, in one go (each step has a time limit; 7 minutes at most in all),
# results under $OUT.
#
# Usage (from the repository root, the project pip-installed; the real data in $TINYBERT_SHARED_DATA or ./shared/data,
# of which bert-base-uncased-vocab.txt, polarity-200.tsv and glove.6B.50d.20k.txt.gz are read):
#   OUT=/tmp/gpu-check bash bench/gpu_check.sh            # on the GPU machine
#   OUT=/tmp/gpu-check bash bench/gpu_check.sh --smoke    # here, on the CPU: tiny sizes, checks the script runs
#
# Writes $OUT/results.json (every figure) and $OUT/results.txt (what each step printed), plus one .txt per step.
# Steps: the environment (nvidia-smi, torch), tests/test_devices.py, bench/gpu_check.py (the scorer alone: the
# reference's per-word forwards on the same GPU, fp32 and bf16 queries/s, top-15 agreement, which GPU two workers
# claim), bench/augment.py --device (the whole pipeline against the reference procedure, fp32 and bf16).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
# The README's set-up makes .venv; elsewhere the python on PATH (with the project installed) or $PYTHON.
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=$PWD/.venv/bin/python; fi
PYTHON=${PYTHON:-python}
DEVICE=cuda
SMOKE=""
if [ "${1:-}" = "--smoke" ]; then DEVICE=cpu; SMOKE=--smoke; fi
if [ -z "${TINYBERT_SHARED_DATA:-}" ] && [ -d shared/data ]; then export TINYBERT_SHARED_DATA=$PWD/shared/data; fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, keep its output and exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local status=$?
  echo "$name rc=$status $((SECONDS - start))s" >> "$OUT/steps.txt"
  { echo "== $name (rc $status, $((SECONDS - start)) s): $*"; grep -v "apitools not found" "$OUT/$name.txt" | tail -40; } \
    >> "$OUT/results.txt"
}

: > "$OUT/steps.txt"; : > "$OUT/results.txt"
step env 30 bash -c "nvidia-smi || true; $PYTHON -c 'import torch; print(torch.__version__, torch.version.cuda, \
torch.cuda.is_available(), torch.cuda.device_count())'; grep -o -w -m1 'avx512_bf16\|amx_bf16' /proc/cpuinfo || true; nproc"
step test_devices 60 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_devices.py \
  --deselect tests/test_devices.py::test_the_prepared_gpu_check_runs_in_smoke_mode  # that test runs this script
step scorer 150 "$PYTHON" bench/gpu_check.py --device "$DEVICE" $SMOKE --json "$OUT/scorer.json"
step pipeline 180 "$PYTHON" bench/augment.py --device "$DEVICE" --precisions bf16 --skip_memory --skip_two_workers \
  $SMOKE --json "$OUT/pipeline.json"

"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
results = {"steps": [line.split() for line in (out / "steps.txt").read_text().splitlines()]}
for name in ("scorer", "pipeline"):
    path = out / f"{name}.json"
    results[name] = json.loads(path.read_text()) if path.exists() else None
(out / "results.json").write_text(json.dumps(results, indent=2))
print(json.dumps(results["steps"]))
PY
