#!/usr/bin/env bash
# Every GPU figure of the project in one run, written as JSON + text under ${OUT:-/tmp/out}.
#
#   bash experiments/run_gpu_benchmarks.sh              # on one H100/H200, ~6-8 minutes
#   SMALL=1 bash experiments/run_gpu_benchmarks.sh      # tiny shapes: checks the script on a CPU
#
# Run from anywhere; it works in the repository root. The device image lacks grain,
# ml-collections and tensorflow-datasets: either run the pip line that
# `bash ../shared/tools/device-wheels.sh` prints first, or bring the wheels along in .whl/
# (carry it) and this script installs them into /tmp/site itself. It then only checks imports.
#
# Stages, most important first (each has its own time limit; a failed or timed-out stage
# is recorded in status.txt and the next one still runs; the exit code is non-zero if any
# stage failed). Files under $OUT:
#   env.txt                      GPU, driver, Python and library versions
#   vs_torch_370m/, vs_torch_130m/   experiments.bench_vs_torch: jaxlm vs HF Llama +
#                                torch.compile, B=2 T=8192 (results.json holds both sides'
#                                full JSON; table.txt); a jax.profiler trace of the 370M step
#                                goes to profile_370m/
#   phase2_5_micro1_16gb.*       the default phase2_5 config (350M, micro batch 1, full
#                                remat) with JAX limited to 15 GiB: does it fit a 16 GB GPU,
#                                compile time, peak memory (rerun unlimited if it does not fit)
#   phase3_micro1_16gb.*         the same for phase3 (documents masked from each other)
#   attention.json, decode.json  experiments/bench_attention.py (attention backends at 8k)
#                                and bench_decode.py (KV-cache decoding vs transformers)
#   phase2_5_save_matmuls_16gb.json, jaxlm_370m_unrolled/   variants: remat=save_matmuls
#                                in 15 GiB; 370M with unrolled layers (no nn.scan)
#   summary.json, summary.txt    every figure above in one table
#   status.txt                   one line per stage: ok / failed (exit code) / seconds
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-/tmp/out}"
PY="${PYTHON:-python3}"
SMALL="${SMALL:-0}"
# Optional stages (variants worth knowing, not essential) start only while the run has
# used less than this many seconds, so the whole script stays within ~8 minutes.
BUDGET_S="${BUDGET_S:-400}"
mkdir -p "$OUT"
: > "$OUT/status.txt"
failures=0

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/progress.log"; }

# stage NAME SECONDS COMMAND...: runs COMMAND with a time limit, output to $OUT/NAME.log.
stage() {
  local name=$1 limit=$2
  shift 2
  log "stage $name (limit ${limit}s): $*"
  local start=$SECONDS rc=0
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    echo "$name ok ${took}s" >> "$OUT/status.txt"
  else
    echo "$name failed rc=$rc ${took}s (see $name.log)" >> "$OUT/status.txt"
    failures=$((failures + 1))
    tail -n 20 "$OUT/$name.log" || true
  fi
  log "stage $name: rc=$rc after ${took}s"
  return 0
}

# optional_stage NAME SECONDS COMMAND...: a stage that is skipped once BUDGET_S is used up.
optional_stage() {
  if [ "$SECONDS" -ge "$BUDGET_S" ]; then
    echo "$1 skipped (time budget ${BUDGET_S}s used)" >> "$OUT/status.txt"
    log "stage $1 skipped: ${SECONDS}s used of the ${BUDGET_S}s budget"
    return 0
  fi
  stage "$@"
}

# ---------------------------------------------------------------- dependencies
check_imports() {
  "$PY" -c "import grain, ml_collections, tensorflow_datasets, absl, flax, optax, \
orbax.checkpoint, sentencepiece, torch, transformers, jax" 2>&1
}
if ! check_imports > /dev/null; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    log "installing .whl/*.whl into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  fi
fi
if ! missing=$(check_imports); then
  echo "Missing Python packages: $missing" >&2
  echo "Run the pip line printed by 'bash ../shared/tools/device-wheels.sh' first, or carry" \
       "its .whl/ directory along." >&2
  exit 2
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export TF_CPP_MIN_LOG_LEVEL=3

{
  date -u
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
      --format=csv
  fi
  "$PY" - <<'EOF'
import sys, jax, flax, optax, torch, transformers
print("python", sys.version.split()[0], "| jax", jax.__version__, "| flax", flax.__version__,
      "| optax", optax.__version__, "| torch", torch.__version__,
      "| transformers", transformers.__version__)
print("jax devices:", jax.devices())
EOF
  echo "XLA_FLAGS=${XLA_FLAGS:-}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo n/a)" \
       "$(git status --short 2>/dev/null | wc -l) changed files"
} > "$OUT/env.txt" 2>&1 || true
cat "$OUT/env.txt"

# ---------------------------------------------------------------- benchmarks
if [ "$SMALL" = "1" ]; then
  stage vs_torch_small 600 "$PY" -m experiments.bench_vs_torch --small --steps=3 --warmup=1 \
    --out-dir="$OUT/vs_torch_small" --jax-flag=--profile_dir="$OUT/profile_small"
  stage phase2_5_tiny 300 "$PY" -m jaxlm.bench --config=configs/phase2_5.py:tiny --steps=3 \
    --warmup=1 --out="$OUT/phase2_5_tiny.json"
else
  # The headline comparison first: ~370M at 8k, with a profile of jaxlm's step.
  stage vs_torch_370m 240 "$PY" -m experiments.bench_vs_torch --sizes=370m --steps=10 \
    --warmup=3 --out-dir="$OUT/vs_torch_370m" --jax-flag=--profile_dir="$OUT/profile_370m"
  stage vs_torch_130m 180 "$PY" -m experiments.bench_vs_torch --sizes=130m --steps=10 \
    --warmup=3 --out-dir="$OUT/vs_torch_130m"

  # The default phase2_5 config (micro batch 1, grad accumulation, full remat) inside a
  # 16 GB budget: JAX may use 15 GiB of this GPU (what a 16 GB card leaves after the CUDA
  # context). grad_accum_steps=4 instead of 64 keeps the run short; memory and compile
  # time do not depend on it (the micro batches are a lax.scan).
  total_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
  fraction=$("$PY" -c "print(round(15 * 1024 / $total_mib, 4))")
  XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction stage phase2_5_micro1_16gb 200 \
    "$PY" -m jaxlm.bench --config=configs/phase2_5.py --config.grad_accum_steps=4 \
    --steps=3 --warmup=1 --out="$OUT/phase2_5_micro1_16gb.json"
  # Phase3 at the same shape: its documents may not see each other
  # (cross_document_attention=False), so cuDNN runs with a same-document mask. Its step
  # time against phase2_5's above is what document masking costs (H200: 1.38x).
  XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction stage phase3_micro1_16gb 200 \
    "$PY" -m jaxlm.bench --config=configs/phase3.py --config.grad_accum_steps=4 \
    --steps=3 --warmup=1 --out="$OUT/phase3_micro1_16gb.json"
  if [ ! -f "$OUT/phase2_5_micro1_16gb.json" ]; then
    log "phase2_5 did not run in 15 GiB; measuring its peak without the limit"
    stage phase2_5_micro1_unlimited 200 "$PY" -m jaxlm.bench --config=configs/phase2_5.py \
      --config.grad_accum_steps=4 --steps=3 --warmup=1 \
      --out="$OUT/phase2_5_micro1_unlimited.json"
  fi
fi

# Other helpers' benchmarks (when present) and variants of jaxlm's step, in order of use.
small_flag=()
if [ "$SMALL" = "1" ]; then small_flag=(--small); fi
if [ -f experiments/bench_attention.py ]; then
  optional_stage attention 120 "$PY" -m experiments.bench_attention "${small_flag[@]}" \
    --json_out="$OUT/attention.json"
fi
if [ "$SMALL" != "1" ]; then
  # What phase2_5 would gain from saving the matmul outputs instead of full remat: does
  # it still run in 15 GiB? (XLA's CPU estimate says ~14.7 GiB: borderline.)
  XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction optional_stage phase2_5_save_matmuls_16gb 120 \
    "$PY" -m jaxlm.bench --config=configs/phase2_5.py --config.grad_accum_steps=4 \
    --config.model.remat=save_matmuls --steps=3 --warmup=1 \
    --out="$OUT/phase2_5_save_matmuls_16gb.json"
fi
if [ -f experiments/bench_decode.py ]; then
  optional_stage decode 120 "$PY" -m experiments.bench_decode "${small_flag[@]}" \
    --out="$OUT/decode.json"
fi
# The cross-entropy's custom backward against plain autodiff, at the 370M / 8k shape.
loss_shape=(--batch=2 --seq_len=8192 --d_model=1024 --vocab=32000)
if [ "$SMALL" = "1" ]; then loss_shape=(--batch=1 --seq_len=512 --d_model=64 --vocab=1024); fi
optional_stage loss_backward 60 "$PY" -m experiments.bench_loss "${loss_shape[@]}"
if [ "$SMALL" != "1" ]; then
  # Unrolled layers instead of nn.scan: XLA may fuse across layers (faster step, slower compile).
  optional_stage jaxlm_370m_unrolled 120 "$PY" -m experiments.bench_vs_torch --sizes=370m \
    --frameworks=jaxlm --steps=10 --warmup=3 --jax-flag=--config.model.scan_layers=False \
    --out-dir="$OUT/jaxlm_370m_unrolled"
fi

# ---------------------------------------------------------------- summary
"$PY" - "$OUT" <<'EOF' || failures=$((failures + 1))
import glob, json, os, sys
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "**", "*.json"), recursive=True)):
  if os.path.basename(path) == "summary.json" or "profile" in path:
    continue
  with open(path) as f:
    data = json.load(f)
  for r in data if isinstance(data, list) else [data]:
    # jaxlm.bench / bench_vs_torch rows (other scripts' JSON is left as it is).
    if isinstance(r, dict) and {"tokens_per_s", "step_time_s", "flops_per_token"} <= set(r):
      rows.append(dict(r, file=os.path.relpath(path, out)))
def pct(x):
  return "n/a" if x is None else f"{100 * x:.1f}%"
def gib(x):
  return "n/a" if x is None else f"{x / 2**30:.2f}"
lines = [f"{'file':42} {'framework':9} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
         f"{'MFU(causal)':>11} {'step ms':>8} {'compile s':>9} {'peak GiB':>8}"]
for r in rows:
  lines.append(
      f"{r['file'][:42]:42} {r.get('framework', 'jaxlm'):9} {r['tokens_per_s']:10.0f} "
      f"{r.get('model_tflops') or 0:8.2f} {pct(r.get('mfu')):>6} {pct(r.get('mfu_causal')):>11} "
      f"{1000 * r['step_time_s']:8.1f} {r.get('compile_time_s') or 0:9.1f} "
      f"{gib(r.get('peak_memory_bytes')):>8}")
text = "\n".join(lines)
print(text)
for name, content in (("summary.json", json.dumps(rows, indent=1)), ("summary.txt", text + "\n")):
  tmp = os.path.join(out, "." + name + ".tmp")
  with open(tmp, "w") as f:
    f.write(content)
  os.replace(tmp, os.path.join(out, name))
EOF

cat "$OUT/status.txt"
log "done: $failures stage(s) failed; results in $OUT"
[ "$failures" -eq 0 ]
