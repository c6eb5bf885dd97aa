#!/usr/bin/env bash
# big_model_bench (issue 13, Benchmarks 2): a GLM-4-9B-shaped LoRA step and P-Tuning v2 step
# with the GLM-4 demo's own settings, on this machine (24 GiB, 2 cores). Prints a table: peak
# RSS, seconds per step, and where the memory goes. A benchmark, not a test (not run by ctest).
#
# Usage: bash bench/big_model_bench.sh [--strategies lora,ptuning,ptuning-b4] [--steps 3]
#          [--model-dir DIR] [--ftrun PATH] [--out FILE]
#   Needs build/ftrun and build/bench/big_model_write (ninja -C build ftrun big_model_write).
#
# - Model: glm-4-9b-chat's config.json sizes (40 layers, hidden 4096, 32 heads, 2 multi-query
#   groups x 128, ffn 13696, padded vocab 151552, rope_ratio 500, seq_length 131072, qkv bias,
#   torch_dtype bfloat16; the other keys as make-tiny-model's glm4 config.json writes them),
#   random normal(0, 0.02) bf16 weights (norms 1) in 10 sharded safetensors + index, written
#   once, streaming (bench/big_model_write.cpp), under /work/bigmodel (reused when complete).
#   The tokenizer is make-tiny-model's glm4 one (ids < 151552).
# - Data: 16 conversations in the demo's `messages` form: a user turn of 200 words (about 400
#   tokens) and an assistant turn far longer than 512 tokens; with `combine: true` the demo cuts
#   the whole conversation to max_input_length + max_output_length + 1 = 1025 tokens, so each
#   row is 1025 tokens with ~600 label tokens.
# - Runs: configs/lora.yaml and configs/ptuning_v2.yaml unchanged, plus: max_steps 3 (--steps),
#   logging_steps 1, no evaluation, no test predictions, save_strategy no (the final adapter is
#   still written, as trainer.save_model() does), torch_dtype bfloat16 (= auto on this
#   config.json), gradient_checkpointing true. lora: batch 1, r 8 on query_key_value.
#   ptuning: ptuning_v2.yaml (512 virtual tokens) at batch 1 like the LoRA run (the issue's
#   "the same for P-Tuning v2"); ptuning-b4 (only when asked for): ptuning_v2.yaml's own
#   batch 4, which needs more than this box has (the watchdog below stops it).
# - Measures: peak RSS (/usr/bin/time -v, the process's maximum resident set); from a 0.25 s
#   /proc sampler, the RSS once loading is done (at the "ftrun: LORA | ..." line); from ftrun's
#   line-buffered stdout, timestamped as it arrives, the time of each step's loss line
#   (s/step: steps 2.. averaged; step 1, after loading, shown apart).
#   Memory split: weights (the checkpoint's bf16 bytes), trainable (fp32 tensor + gradient +
#   two AdamW moments = 16 bytes per trainable parameter), the rest (activations, libtorch,
#   allocator) = peak - both.
# - Safety on this shared 24 GiB box: refuses to start with less than 21 GiB available; holds
#   /tmp/ftrun-build.lock for the whole run (no compile beside it; set FTRUN_BUILD_LOCK_HELD=1
#   when running it under `flock /tmp/ftrun-build.lock ...` yourself) and /tmp/BIGBENCH_RUNNING
#   while ftrun runs (other sessions wait for it), removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STRATS=lora,ptuning STEPS=3 BIG=/work/bigmodel MODEL="" FTRUN=build/ftrun OUTFILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --strategies) STRATS=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --model-dir) MODEL=$2; shift ;;
    --ftrun) FTRUN=$2; shift ;;
    --out) OUTFILE=$2; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "big_model_bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
MODEL=${MODEL:-$BIG/glm-4-9b-shaped}
FTRUN=$(realpath "$FTRUN")
WRITER=$ROOT/build/bench/big_model_write
[ -x "$FTRUN" ] || { echo "big_model_bench: no ftrun at $FTRUN (ninja -C build ftrun)" >&2; exit 2; }
[ -x "$WRITER" ] || { echo "big_model_bench: no $WRITER (ninja -C build big_model_write)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "big_model_bench: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

# The build lock for the whole run: no compile may take memory beside a 19 GiB process.
if [ -z "${FTRUN_BUILD_LOCK_HELD:-}" ]; then
  exec 9>/tmp/ftrun-build.lock
  echo "big_model_bench: waiting for the build lock" >&2
  flock 9
fi

# 1. The model (once) and the data.
mkdir -p "$BIG"
TEMPLATE=$BIG/tiny-glm4
if [ ! -f "$TEMPLATE/config.json" ]; then
  "$FTRUN" make-tiny-model "$TEMPLATE" --corpus "$ROOT/examples/tiny/tokenizer_corpus.txt" \
    --vocab-size 400 --seed 42 --model-type glm4 > "$BIG/make-tiny-model.log" 2>&1
fi
"$WRITER" "$TEMPLATE" "$MODEL"
WEIGHT_BYTES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["total_size"])' \
  "$MODEL/model.safetensors.index.json")

DATA=$BIG/data
mkdir -p "$DATA"
python3 - "$ROOT/examples/tiny/tokenizer_corpus.txt" "$DATA/train.jsonl" <<'EOF'
import json, random, sys
words = open(sys.argv[1], encoding="utf-8").read().split()
rng = random.Random(13)
def text(n):  # n words of the corpus from a random place
    i = rng.randrange(len(words) - n)
    return " ".join(words[i:i + n])
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for _ in range(16):
        f.write(json.dumps({"messages": [{"role": "user", "content": text(200)},
                                         {"role": "assistant", "content": text(1500)}]}) + "\n")
EOF

T=$BIG/runs
mkdir -p "$T"
RESULTS=$T/results.jsonl
: > "$RESULTS"

cleanup() { rm -f /tmp/BIGBENCH_RUNNING; }
trap cleanup EXIT

avail_gib() { awk '/MemAvailable/ {printf "%d", $2 / 1048576}' /proc/meminfo; }

run_one() {  # NAME YAML EXTRA_SET...
  local name=$1 yaml=$2; shift 2
  local dir=$T/$name
  rm -rf "$dir"; mkdir -p "$dir"
  local avail; avail=$(avail_gib)
  if [ "$avail" -lt 21 ]; then
    echo "big_model_bench: only $avail GiB available (free -g), 21 needed: $name not run" >&2
    echo "{\"name\": \"$name\", \"ok\": false, \"error\": \"only $avail GiB available\"}" >> "$RESULTS"
    return
  fi
  # The page cache is not dropped first: file pages are the kernel's, not the process's RSS
  # once read (loading drops them from its mapping), so "load s" depends on what is cached.
  touch /tmp/BIGBENCH_RUNNING
  local args=("$ROOT/$yaml" --model-dir "$MODEL" --data-dir "$DATA"
    --set "training_args.output_dir=$dir/out" --set "training_args.max_steps=$STEPS"
    --set training_args.logging_steps=1 --set training_args.eval_strategy=no
    --set training_args.save_strategy=no --set training_args.gradient_checkpointing=true
    --set torch_dtype=bfloat16 --set data_config.val_file=null --set data_config.test_file=null "$@")
  echo "big_model_bench: $name: ftrun ${args[*]}" >&2
  local t0; t0=$(date +%s.%N)
  set +e
  /usr/bin/time -v -o "$dir/time.txt" stdbuf -oL "$FTRUN" "${args[@]}" > >(while IFS= read -r l; do
      printf '%s %s\n' "$(date +%s.%N)" "$l"; done > "$dir/stdout.txt") 2> "$dir/stderr.txt" &
  local tpid=$!
  # Sampler: RSS of ftrun (the child of time; same pid after its env re-exec) every 0.25 s.
  (
    local pid=""
    while kill -0 "$tpid" 2>/dev/null; do
      # ftrun is time's child running $FTRUN (the other child is the stdout timestamper; ftrun
      # re-executes itself through /proc/self/exe, so its name is "exe").
      [ -n "$pid" ] || pid=$(pgrep -P "$tpid" -f "^$FTRUN " | head -n 1 || true)
      if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
        awk -v t="$(date +%s.%N)" '/^VmRSS|^RssAnon|^RssFile/ {v[$1]=$2} END {print t, v["VmRSS:"], v["RssAnon:"], v["RssFile:"]}' \
          "/proc/$pid/status" >> "$dir/rss.txt" 2>/dev/null || true
        # Watchdog: this box is shared; past 22 GiB (or under 1 GiB left) ftrun is stopped
        # before the kernel's OOM killer picks some other process.
        local rss_kb avail_kb
        rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
        if [ "${rss_kb:-0}" -gt 23068672 ] || [ "$avail_kb" -lt 1048576 ]; then
          echo "$(date +%s.%N) killed: RSS ${rss_kb} kB, available ${avail_kb} kB" >> "$dir/watchdog.txt"
          kill -9 "$pid" 2>/dev/null || true
        fi
      fi
      sleep 0.25
    done
  ) &
  local spid=$!
  wait "$tpid"; local rc=$?
  wait "$spid"; sleep 1
  set -e
  rm -f /tmp/BIGBENCH_RUNNING
  python3 - "$name" "$rc" "$t0" "$dir" "$WEIGHT_BYTES" >> "$RESULTS" <<'EOF'
import json, os, re, sys
name, rc, t0, d, wbytes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
r = {"name": name, "ok": rc == 0, "weights_bytes": wbytes}
time_txt = open(os.path.join(d, "time.txt")).read() if os.path.exists(os.path.join(d, "time.txt")) else ""
m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_txt)
if m: r["peak_rss_bytes"] = int(m.group(1)) * 1024
m = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", time_txt)
if m: r["wall"] = m.group(1)
out = [l.rstrip("\n").split(" ", 1) for l in open(os.path.join(d, "stdout.txt"))] if os.path.exists(os.path.join(d, "stdout.txt")) else []
out = [p for p in out if len(p) == 2]
loaded_t = None
for t, line in out:
    m = re.search(r"trainable (\d+) of (\d+) params", line)
    if m:
        loaded_t = float(t); r["trainable"] = int(m.group(1)); r["params"] = int(m.group(2))
samples = []
if os.path.exists(os.path.join(d, "rss.txt")):
    for l in open(os.path.join(d, "rss.txt")):
        p = l.split()
        if len(p) == 4: samples.append((float(p[0]), int(p[1]) * 1024, int(p[2]) * 1024, int(p[3]) * 1024))
if loaded_t is not None and samples:
    before = [s for s in samples if s[0] <= loaded_t]
    if before:
        r["load_peak_rss_bytes"] = max(s[1] for s in before)
        r["after_load_rss_bytes"] = before[-1][1]
        r["load_seconds"] = loaded_t - t0
    after = [s for s in samples if s[0] > loaded_t]
    if after:
        r["step_peak_rss_sampled_bytes"] = max(s[1] for s in after)
        r["step_peak_file_rss_bytes"] = max(s[3] for s in after)
# Each step's loss line on stdout (line-buffered, timestamped as it arrives).
steps = [float(t) for t, line in out if re.search(r"\| step \d+ \|", line) and "loss" in line]
if steps and loaded_t is not None:
    r["step1_seconds"] = steps[0] - loaded_t
    if len(steps) > 1: r["seconds_per_step"] = (steps[-1] - steps[0]) / (len(steps) - 1)
mf = os.path.join(d, "out", "metrics.jsonl")
if os.path.exists(mf):
    recs = [json.loads(l) for l in open(mf) if '"loss"' in l]
    r["losses"] = [round(x["loss"], 4) for x in recs]
    r["tokens_per_second"] = [round(x.get("tokens_per_second", 0), 1) for x in recs]
if os.path.exists(os.path.join(d, "watchdog.txt")):
    r["error"] = "stopped by the watchdog: " + open(os.path.join(d, "watchdog.txt")).read().strip()
elif rc != 0:
    err = [l for l in open(os.path.join(d, "stderr.txt")) if l.strip() and "warning" not in l]
    r["error"] = (err[-1].strip() if err else "exit %d" % rc)[:300]
print(json.dumps(r))
EOF
  tail -n 1 "$RESULTS" >&2
}

IFS=, read -ra STRAT_LIST <<< "$STRATS"
for s in "${STRAT_LIST[@]}"; do
  case "$s" in
    lora) run_one lora configs/lora.yaml ;;
    ptuning) run_one ptuning configs/ptuning_v2.yaml --set training_args.per_device_train_batch_size=1 ;;
    ptuning-b4) run_one ptuning-b4 configs/ptuning_v2.yaml ;;
    *) echo "big_model_bench: unknown strategy $s (lora, ptuning, ptuning-b4)" >&2; exit 2 ;;
  esac
done

# 2. The table.
python3 - "$RESULTS" "$STEPS" <<'EOF' | tee "$T/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
G = 1 << 30
def gib(b): return "%.2f" % (b / G) if b is not None else "-"
print("GLM-4-9B shape (%.2f B params, bf16 weights %.2f GiB), %s steps, gradient checkpointing, "
      "goal: peak RSS <= 19.6 GiB (21 GB)\n" % (rows[0].get("weights_bytes", 0) / 2e9, rows[0].get("weights_bytes", 0) / G, sys.argv[2]))
print("| run | peak RSS GiB (GB) | after load GiB | load s | step 1 s | s/step (2..) | weights GiB | trainable (fp32 + grad + 2 moments) GiB | rest GiB | losses | goal |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
for r in rows:
    if not r.get("ok"):
        print("| %s | %s | | | | | | | | failed: %s | |" % (r["name"], gib(r.get("peak_rss_bytes")), r.get("error", "")))
        continue
    peak = r.get("peak_rss_bytes"); w = r["weights_bytes"]; tr = r.get("trainable", 0) * 16
    print("| %s | %s (%.1f) | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s |" % (
        r["name"], gib(peak), peak / 1e9, gib(r.get("after_load_rss_bytes")), r.get("load_seconds", 0),
        r.get("step1_seconds", 0), "%.0f" % r["seconds_per_step"] if "seconds_per_step" in r else "-",
        gib(w), gib(tr), gib(peak - w - tr), r.get("losses"), "met" if peak <= 19.6 * G else "MISSED"))
EOF
[ -z "$OUTFILE" ] || cp "$T/table.md" "$OUTFILE"
