#!/usr/bin/env bash
# bench/gpu/gpu_bench.sh (issue 14, "The GPU check" step 2): ftrun against HF transformers + PEFT
# on one GPU: a ~1B Llama-shaped and a ~1B GLM-4-shaped model (random bf16 weights, written here
# by bench/gpu/gpu_bench.py, which says the shapes and the FLOP formula), seq 2048, LoRA r=8 on
# all projections and full SFT; tokens/s, peak CUDA memory and MFU against a bf16 matmul peak
# measured in the same call, with the issue's goals checked. A benchmark, not a test.
#
# Usage: bench/gpu/gpu_bench.sh --out DIR [--dry-run] [--ftrun PATH] [--python PY]
#          [--models llama,glm] [--strategies lora,full] [--warmup W] [--steps N]
#          [--budget SECONDS] [--run-min SECONDS] [--work DIR]
#   Normally called by bench/gpu/check.sh, whose --ftrun is a wrapper that sets LD_LIBRARY_PATH
#   for the carried binary.
#   --dry-run  on the CPU (device: cpu): tiny models, 1 warm-up + 2 timed steps, to check the
#              plumbing; the table says it is no measurement.
#   --budget   seconds for everything (default 280): a run that cannot start with at least
#              --run-min (default 40) seconds left is skipped and listed, and each run gets at most
#              what is left (and 150 s at most), so the table is always written.
# Writes in DIR: bench.md (the table and goal check), bench.json (the same as data), bench-runs.log
# (every run's config, log tail and result). Models and run outputs go to --work (default a
# temporary folder, removed at the end).
#
# Settings matched on both sides (docs/decisions.md, "GPU check"): the model held in bf16
# (ftrun torch_dtype: bfloat16; HF from_pretrained in bf16), bf16 autocast (ftrun
# training_args.bf16: true; HF torch.autocast as Trainer's bf16: true), sdpa, gradient
# checkpointing, batch 4 x 2048, AdamW lr 1e-4, linear schedule, clipping 1.0. Full SFT: ftrun
# keeps fp32 master weights and AdamW moments (DeepSpeed's bf16 mode), HF plain bf16 weights,
# gradients and AdamW state (Trainer without DeepSpeed on a bf16-loaded model).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

OUTDIR="" DRY=0 FTRUN="" PY="" MODELS=llama,glm STRATS=lora,full WARMUP="" STEPS="" BUDGET=280 RUN_MIN=40 WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR=$2; shift ;;
    --dry-run) DRY=1 ;;
    --ftrun) FTRUN=$2; shift ;;
    --python) PY=$2; shift ;;
    --models) MODELS=$2; shift ;;
    --strategies) STRATS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --run-min) RUN_MIN=$2; shift ;;
    --work) WORK=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu_bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUTDIR" ] || { echo "gpu_bench: --out DIR is required" >&2; exit 2; }
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
FTRUN=${FTRUN:-$ROOT/bench/gpu/carry/bin/ftrun}
PY=${PY:-python3}
if [ "$DRY" = 1 ]; then
  DEVICE=cpu SIZE=dry WARMUP=${WARMUP:-1} STEPS=${STEPS:-2}
else
  DEVICE=cuda SIZE=gpu WARMUP=${WARMUP:-3} STEPS=${STEPS:-10}
fi
[ -x "$FTRUN" ] || { echo "gpu_bench: no ftrun binary at $FTRUN" >&2; exit 2; }
if [ -n "$WORK" ]; then mkdir -p "$WORK"; T=$(cd "$WORK" && pwd); else
  T=$(mktemp -d /tmp/ftrun_gpu_bench.XXXXXX); trap 'rm -rf "$T"' EXIT; fi
UTIL="$HERE/gpu_bench.py"
RUNLOG=$OUTDIR/bench-runs.log
RESULTS=$T/results.jsonl
: > "$RUNLOG"
: > "$RESULTS"
start=$SECONDS
left() { echo $((BUDGET - (SECONDS - start))); }
say() { echo "gpu_bench: [$((SECONDS - start)) s] $*" | tee -a "$RUNLOG" >&2; }

# record SIDE MODEL STRATEGY OK JSON_OR_ERROR [NOTE]: one line of results.jsonl
record() {
  "$PY" - "$@" >> "$RESULTS" <<'EOF'
import json, sys
side, model, strat, ok, payload = sys.argv[1:6]
r = {"side": side, "model": model, "strategy": strat, "ok": ok == "1"}
if ok == "1":
    r.update(json.loads(payload))
else:
    r["error"] = payload
if len(sys.argv) > 6 and sys.argv[6]:
    r["note"] = sys.argv[6]
print(json.dumps(r))
EOF
}
last_error() { grep -v '^\s*$' "$1" | grep -iv 'warn' | tail -n 1 | cut -c1-200; }
# The run's time cap: what is left of the budget, at most 150 s; empty when it cannot start.
run_cap() { local l; l=$(left); [ "$l" -ge "$RUN_MIN" ] && echo $((l < 150 ? l : 150)) || true; }

say "device $DEVICE, sizes $SIZE, $WARMUP warm-up + $STEPS timed steps, budget $BUDGET s, work $T"
timeout 120 "$PY" "$UTIL" prep "$T" --size "$SIZE" --device "$DEVICE" 2>&1 | tee -a "$RUNLOG" \
  || { say "writing the models failed"; exit 1; }
timeout 60 "$PY" "$UTIL" peak "$T/peaks.json" --device "$DEVICE" 2>&1 | tee -a "$RUNLOG" || say "matmul peak failed: no MFU"
SEQ=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["seq"])' "$T/models.json")
BATCH=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch"])' "$T/models.json")

run_ftrun() {  # MODEL STRATEGY
  local model=$1 strat=$2 dir=$T/run-ftrun-$1-$2 cap
  cap=$(run_cap)
  if [ -z "$cap" ]; then record ftrun "$model" "$strat" 0 "skipped: $(left) s of the budget left"; return; fi
  rm -rf "$dir"; mkdir -p "$dir"
  local tmpl=llama3 targets="[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
  [ "$model" = glm ] && tmpl=glm4 targets="[q_proj, k_proj, v_proj, o_proj, gate_up_proj, down_proj]"
  cat > "$dir/run.yaml" <<EOF
# gpu_bench: $model $strat on $DEVICE
model_dir: $T/$model
data_dir: $T/data
chat_template: $tmpl
device: $DEVICE
torch_dtype: bfloat16
attn_implementation: sdpa
data_config:
  train_file: train.jsonl
max_input_length: $SEQ
max_output_length: $SEQ
training_args:
  output_dir: $dir/out
  max_steps: $((WARMUP + STEPS))
  learning_rate: 1e-4
  per_device_train_batch_size: $BATCH
  logging_strategy: steps
  logging_steps: 1
  save_strategy: "no"
  eval_strategy: "no"
  bf16: true
  gradient_checkpointing: true
EOF
  [ "$strat" = lora ] && printf 'peft_config:\n  peft_type: LORA\n  task_type: CAUSAL_LM\n  r: 8\n  lora_alpha: 16\n  lora_dropout: 0.0\n  target_modules: %s\n' "$targets" >> "$dir/run.yaml"
  say "ftrun $model $strat (cap $cap s)"
  local rc=0
  FTRUN_CACHE_DIR=$dir/cache timeout "$cap" "$FTRUN" "$dir/run.yaml" > "$dir/log" 2>&1 || rc=$?
  { echo "--- ftrun $model $strat: rc $rc; config:"; cat "$dir/run.yaml"; echo "--- log (last 25 lines):"; tail -n 25 "$dir/log"; } >> "$RUNLOG"
  if [ "$rc" = 0 ]; then
    local res note
    if ! res=$("$PY" "$UTIL" ftrun-result "$dir/out" "$WARMUP" 2>&1); then
      record ftrun "$model" "$strat" 0 "no result: $(echo "$res" | tail -n 1 | cut -c1-200)"; return
    fi
    # What ftrun says it holds and computes in (its start line) and whether it keeps fp32 masters.
    note=$(grep -o 'trainable .*' "$dir/log" | head -n 1 || true)
    note="$note$(grep -o ' *full fine-tuning keeps fp32 weights.*' "$dir/log" | head -n 1 || true)"
    record ftrun "$model" "$strat" 1 "$res" "$note"
    echo "result: $res" >> "$RUNLOG"
    # Only metrics.jsonl was needed: the written model (GBs for full SFT) goes at once.
    find "$dir/out" -mindepth 1 -maxdepth 1 ! -name metrics.jsonl -exec rm -rf {} +
  elif [ "$rc" = 124 ]; then
    record ftrun "$model" "$strat" 0 "timed out after $cap s"
  else
    record ftrun "$model" "$strat" 0 "rc $rc: $(last_error "$dir/log")"
  fi
}

run_hf() {  # MODEL STRATEGY
  local model=$1 strat=$2 dir=$T/run-hf-$1-$2 cap
  cap=$(run_cap)
  if [ -z "$cap" ]; then record hf "$model" "$strat" 0 "skipped: $(left) s of the budget left"; return; fi
  rm -rf "$dir"; mkdir -p "$dir"
  say "HF $model $strat (cap $cap s)"
  local rc=0
  TRANSFORMERS_VERBOSITY=error timeout "$cap" "$PY" "$UTIL" hf --model "$T/$model" --data "$T/data/train.jsonl" \
    --strategy "$strat" --device "$DEVICE" --warmup "$WARMUP" --steps "$STEPS" --batch "$BATCH" > "$dir/log" 2> "$dir/err" || rc=$?
  { echo "--- hf $model $strat: rc $rc; stderr (last 15 lines):"; tail -n 15 "$dir/err"; } >> "$RUNLOG"
  if [ "$rc" = 0 ]; then
    record hf "$model" "$strat" 1 "$(tail -n 1 "$dir/log")"
    echo "result: $(tail -n 1 "$dir/log")" >> "$RUNLOG"
  elif [ "$rc" = 124 ]; then
    record hf "$model" "$strat" 0 "timed out after $cap s"
  else
    record hf "$model" "$strat" 0 "rc $rc: $(last_error "$dir/err")"
  fi
}

IFS=, read -r -a models <<< "$MODELS"
IFS=, read -r -a strats <<< "$STRATS"
# LoRA first (the issue's main comparison), then full SFT; the two sides alternate on each setting.
for strat in "${strats[@]}"; do
  for model in "${models[@]}"; do
    run_ftrun "$model" "$strat"
    run_hf "$model" "$strat"
  done
done
[ "$(left)" -ge 15 ] && { timeout 30 "$PY" "$UTIL" peak "$T/peaks.json" --device "$DEVICE" 2>&1 | tee -a "$RUNLOG" || true; }

DRYFLAG=()
[ "$DRY" = 1 ] && DRYFLAG=(--dry-run)
"$PY" "$UTIL" table "$RESULTS" "$T/models.json" "$T/peaks.json" "$OUTDIR/bench.md" "$OUTDIR/bench.json" "${DRYFLAG[@]}"
say "done"
