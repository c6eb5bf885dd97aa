#!/usr/bin/env bash
# train_bench (issue 13, Benchmarks 1): ftrun against HF transformers + PEFT, same model, same
# data, same thread settings, in one run; prints one markdown table (tokens/s, peak RSS, MFU)
# with the ratios. A benchmark, not a test: nothing here is run by ctest.
#
# Usage: bench/train_bench.sh [--quick] [--steps N] [--warmup W] [--models llama,chatglm]
#          [--strategies lora,ptuning,full] [--modes fp32,autocast,bf16] [--ftrun PATH]
#          [--no-hf] [--hf-env ftrun|plain] [--gradient-checkpointing] [--keep DIR] [--out FILE]
#   --quick   small models (hidden 256, 4 layers, vocab 8000), batch 4 x 128, 1 warm-up + 2
#             timed steps: a dry run of a few minutes. Default: the issue's sizes (hidden 512,
#             8 layers, 8 heads / 4 kv heads, ffn 1408, vocab 32000; the GLM-4 shape has 2
#             multi-query groups, padded vocab 32768), batch 4 x 256, 2 warm-up + 4 timed steps.
#   --out     also write the table to FILE.  --keep  keep models, configs and logs in DIR.
#
# What runs (bench/train_bench_util.py makes the models and data, computes the table):
# - Models: random weights, fp32 safetensors + config.json. Llama in HF layout (both sides read
#   it); the GLM-4 shape in THUDM's chatglm layout for ftrun and the same weights in
#   transformers' native `glm` layout (GlmForCausalLM, glm-4-9b-chat-hf) for HF: transformers
#   4.49 has no native chatglm class.
# - Data: pre-tokenized rows (input_ids, labels; first quarter of each row is prompt, label
#   -100), all of one length, so no padding; ftrun reads the JSONL, HF the same rows in order.
# - Modes: fp32; bf16 autocast (ftrun training_args.bf16: true; HF torch.autocast("cpu",
#   torch.bfloat16), what HF Trainer does for bf16: true on CPU); bf16-held weights (ftrun
#   torch_dtype: bfloat16; HF from_pretrained(torch_dtype=torch.bfloat16)), no autocast.
# - Strategies: LoRA r=8 alpha 16 on all projections, P-Tuning v2 (PREFIX_TUNING, 16 virtual
#   tokens), full SFT. AdamW lr 1e-4, linear schedule, grad clipping 1.0 on both sides.
# - Threads: OMP_NUM_THREADS=2 for both (HF also calls torch.set_num_threads(2)). ftrun adds its
#   own environment defaults (OMP_WAIT_POLICY=PASSIVE, GLIBC_TUNABLES=glibc.malloc.hugetlb=1);
#   with --hf-env ftrun (the default) the HF process gets the same two, with --hf-env plain it
#   gets neither (the libraries' own settings). The matmul peaks run with the HF setting.
# - Each run is its own process under /usr/bin/time -v (peak RSS = its maximum resident set);
#   tokens/s = non-padding input tokens / seconds over the timed steps (ftrun: metrics.jsonl with
#   logging_steps 1, the warm-up records dropped; HF: the same per-step window in Python).
# - MFU = achieved FLOP/s / the 2048^3 matmul peak measured in this run (before and after the
#   runs; the better of the two), fp32 and bf16. Training FLOPs per token (train_bench_util.py,
#   flops_per_token): full SFT 6N + 12As, LoRA 4N + 12As + 6N_lora, P-Tuning 4N + 12A(s + 16);
#   N = weights in matmuls incl. the LM head, A = layers x heads x head_dim, s = sequence length.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0 STEPS="" WARMUP="" MODELS=llama,chatglm STRATS=lora,ptuning,full MODES=fp32,autocast,bf16
FTRUN=build/ftrun NO_HF=0 HF_ENV=ftrun GC=false KEEP="" OUTFILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --steps) STEPS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --models) MODELS=$2; shift ;;
    --strategies) STRATS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --ftrun) FTRUN=$2; shift ;;
    --no-hf) NO_HF=1 ;;
    --hf-env) HF_ENV=$2; shift ;;
    --gradient-checkpointing) GC=true ;;
    --keep) KEEP=$2; shift ;;
    --out) OUTFILE=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "train_bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then STEPS=${STEPS:-2} WARMUP=${WARMUP:-1}; else STEPS=${STEPS:-4} WARMUP=${WARMUP:-2}; fi
case "$HF_ENV" in ftrun|plain) ;; *) echo "train_bench: --hf-env is ftrun or plain" >&2; exit 2 ;; esac
FTRUN=$(realpath "$FTRUN")
[ -x "$FTRUN" ] || { echo "train_bench: no ftrun binary at $FTRUN (build it: ninja -C build ftrun)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "train_bench: needs /usr/bin/time (apt-get install time) for peak RSS" >&2; exit 2; }

# Pythons: the venv (build/pyref, `bash .ci/install-pyref`) has transformers + PEFT on Debian's
# torch; without it the ftrun rows are still measured (models are written with the standard
# library; peaks need some python with torch).
VENV=$ROOT/build/pyref/bin/python
HF_PY="" HF_WHY=""
if [ "$NO_HF" = 1 ]; then
  HF_WHY="--no-hf given"
elif [ ! -x "$VENV" ]; then
  HF_WHY="no venv at build/pyref (make it with: bash .ci/install-pyref)"
elif ! "$VENV" -c 'import transformers, peft' 2>/dev/null; then
  HF_WHY="build/pyref lacks transformers or peft (rerun bash .ci/install-pyref)"
else
  HF_PY=$VENV
fi
TORCH_PY=""
for p in "$VENV" /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' 2>/dev/null; then TORCH_PY=$p; break; fi
done
PY=${TORCH_PY:-python3}
UTIL="$ROOT/bench/train_bench_util.py"

if [ -n "$KEEP" ]; then T=$(realpath -m "$KEEP"); mkdir -p "$T"; else
  T=$(mktemp -d /tmp/ftrun_train_bench.XXXXXX); trap 'rm -rf "$T"' EXIT; fi
[ -n "$HF_PY" ] || echo "train_bench: HF transformers + PEFT ABSENT: $HF_WHY. Only the ftrun rows are measured." >&2

PREP_ARGS=()
[ "$QUICK" = 1 ] && PREP_ARGS=(--quick)
"$PY" "$UTIL" prep "$T" "${PREP_ARGS[@]}"
SEQ=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sizes"]["seq"])' "$T/models.json")

# The clean environment both sides start from; each side's additions are explicit.
BASE_ENV=(env -u OMP_WAIT_POLICY -u GLIBC_TUNABLES -u FTRUN_NO_ENV_DEFAULTS -u FTRUN_ENV_DEFAULTS_APPLIED
          -u MKL_NUM_THREADS -u OPENBLAS_NUM_THREADS OMP_NUM_THREADS=2)
HF_EXTRA=()
[ "$HF_ENV" = ftrun ] && HF_EXTRA=(OMP_WAIT_POLICY=PASSIVE GLIBC_TUNABLES=glibc.malloc.hugetlb=1)

if [ -n "$TORCH_PY" ]; then
  "${BASE_ENV[@]}" "${HF_EXTRA[@]}" "$TORCH_PY" "$UTIL" peak "$T/peaks.json"
else
  echo "train_bench: no python with torch: no matmul peaks, no MFU" >&2
fi

RESULTS=$T/results.jsonl
: > "$RESULTS"
# record SIDE MODEL STRATEGY MODE OK RSS_KB JSON_OR_ERROR: one line of results.jsonl
record() {
  python3 - "$@" >> "$RESULTS" <<'EOF'
import json, sys
side, model, strat, mode, ok, rss, payload = sys.argv[1:8]
r = {"side": side, "model": model, "strategy": strat, "mode": mode, "ok": ok == "1"}
if rss:
    r["peak_rss_mb"] = int(rss) / 1024
if ok == "1":
    r.update(json.loads(payload))
else:
    r["error"] = payload
print(json.dumps(r))
EOF
}
max_rss_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
last_error() { grep -v '^\s*$' "$1" | grep -iv 'warn' | tail -n 1 | cut -c1-200; }

run_ftrun() {  # MODEL STRATEGY MODE
  local model=$1 strat=$2 mode=$3 dir=$T/run-ftrun-$1-$2-$3
  rm -rf "$dir"; mkdir -p "$dir"
  local tmpl=llama3 dtype=float32 bf16=false
  [ "$model" = chatglm ] && tmpl=glm4
  [ "$mode" = autocast ] && bf16=true
  [ "$mode" = bf16 ] && dtype=bfloat16
  cat > "$dir/run.yaml" <<EOF
# train_bench: $model $strat $mode
model_dir: $T/$model
data_dir: $T/data
chat_template: $tmpl
torch_dtype: $dtype
data_config:
  train_file: train.jsonl
max_input_length: $SEQ
max_output_length: $SEQ
training_args:
  output_dir: $dir/out
  max_steps: $((WARMUP + STEPS))
  learning_rate: 1e-4
  per_device_train_batch_size: 4
  logging_strategy: steps
  logging_steps: 1
  save_strategy: "no"
  eval_strategy: "no"
  bf16: $bf16
  gradient_checkpointing: $GC
EOF
  case "$strat/$model" in
    lora/llama) printf 'peft_config:\n  peft_type: LORA\n  task_type: CAUSAL_LM\n  r: 8\n  lora_alpha: 16\n  lora_dropout: 0.0\n  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]\n' >> "$dir/run.yaml" ;;
    lora/chatglm) printf 'peft_config:\n  peft_type: LORA\n  task_type: CAUSAL_LM\n  r: 8\n  lora_alpha: 16\n  lora_dropout: 0.0\n  target_modules: [query_key_value, dense, dense_h_to_4h, dense_4h_to_h]\n' >> "$dir/run.yaml" ;;
    ptuning/*) printf 'peft_config:\n  peft_type: PREFIX_TUNING\n  task_type: CAUSAL_LM\n  num_virtual_tokens: 16\n' >> "$dir/run.yaml" ;;
  esac
  if FTRUN_CACHE_DIR=$dir/cache "${BASE_ENV[@]}" timeout 900 /usr/bin/time -v -o "$dir/time.txt" \
       "$FTRUN" "$dir/run.yaml" > "$dir/log" 2>&1; then
    local res
    res=$(python3 "$UTIL" ftrun-result "$dir/out" "$WARMUP")
    # What ftrun says it holds and computes in (its start line, after "| ").
    local prec
    prec=$(grep -o 'trainable .*' "$dir/log" | head -n 1 || true)
    # ftrun says so when it keeps fp32 weights for full fine-tuning despite torch_dtype.
    local keeps
    keeps=$(grep -o 'full fine-tuning keeps fp32 weights.*' "$dir/log" | head -n 1 || true)
    [ -n "$keeps" ] && prec="$prec | $keeps"
    res=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["ftrun_line"]=sys.argv[2]; print(json.dumps(r))' "$res" "$prec")
    record ftrun "$model" "$strat" "$mode" 1 "$(max_rss_kb "$dir/time.txt")" "$res"
  else
    record ftrun "$model" "$strat" "$mode" 0 "" "$(last_error "$dir/log")"
  fi
  [ -n "$KEEP" ] || rm -rf "$dir/out"
}

run_hf() {  # MODEL STRATEGY MODE
  local model=$1 strat=$2 mode=$3 dir=$T/run-hf-$1-$2-$3 mdir=$T/$1
  [ "$model" = chatglm ] && mdir=$T/glm-hf
  rm -rf "$dir"; mkdir -p "$dir"
  local gc=()
  [ "$GC" = true ] && gc=(--gradient-checkpointing)
  if "${BASE_ENV[@]}" "${HF_EXTRA[@]}" TRANSFORMERS_VERBOSITY=error timeout 900 /usr/bin/time -v -o "$dir/time.txt" \
       "$HF_PY" "$ROOT/bench/train_bench_hf.py" --model "$mdir" --data "$T/data/train.jsonl" --strategy "$strat" \
       --mode "$mode" --warmup "$WARMUP" --steps "$STEPS" --batch 4 --threads 2 "${gc[@]}" > "$dir/log" 2> "$dir/err"; then
    record hf "$model" "$strat" "$mode" 1 "$(max_rss_kb "$dir/time.txt")" "$(tail -n 1 "$dir/log")"
  else
    record hf "$model" "$strat" "$mode" 0 "" "$(last_error "$dir/err")"
  fi
}

IFS=, read -r -a models <<< "$MODELS"
IFS=, read -r -a strats <<< "$STRATS"
IFS=, read -r -a modes <<< "$MODES"
start=$SECONDS
for model in "${models[@]}"; do
  for strat in "${strats[@]}"; do
    for mode in "${modes[@]}"; do
      # Alternate the two sides on the same setting, so slow drift of the machine hits both.
      echo "train_bench: $model $strat $mode ($((SECONDS - start)) s)" >&2
      run_ftrun "$model" "$strat" "$mode"
      [ -n "$HF_PY" ] && run_hf "$model" "$strat" "$mode"
    done
  done
done

[ -n "$TORCH_PY" ] && "${BASE_ENV[@]}" "${HF_EXTRA[@]}" "$TORCH_PY" "$UTIL" peak "$T/peaks.json"
{
  echo "train_bench: $(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs),"\
       "$(nproc) cores; $WARMUP warm-up + $STEPS timed steps of batch 4 x $SEQ;"\
       "HF env: $HF_ENV; gradient checkpointing: $GC; $((SECONDS - start)) s of runs"
  [ -n "$HF_PY" ] || echo "HF transformers + PEFT ABSENT ($HF_WHY): ftrun rows only."
  python3 "$UTIL" table "$RESULTS" "$T/models.json" "$T/peaks.json"
} | tee ${OUTFILE:+"$OUTFILE"}
