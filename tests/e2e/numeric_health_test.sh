#!/usr/bin/env bash
# Numeric health in training and waits that say what they wait for (issue 16):
#   - rope_theta -1 in config.json is refused at load, naming the file and the key;
#   - a pre-tokenized record with every label -100 is refused naming file:line, like a
#     conversation with no assistant turn ("nothing would be trained" in both forms);
#   - a NaN loss mid-run (a learning rate of 3e37: step 1 is finite and moves LoRA B to about
#     +-3e37, so step 2's forward overflows) stops training at step 2 naming the step and the
#     module, and checkpoint-1 stays the newest (nothing of step 2 saved or logged); the same at
#     2 ranks under ZeRO-3 (full fine-tuning, gloo);
#   - a NaN loss on one rank only (FTRUN_TEST_NAN_LOSS_AT_STEP) stops every rank at that step;
#   - nonfinite: skip drops the step (warning, a metrics record with skipped_steps), goes on to
#     the end, and a resume after the skipped step ends bit-identical (a skipped step made no
#     update); at 2 ranks too;
#   - a rendezvous missing a rank, and a collective a rank never joins, print notices naming
#     the missing rank, the endpoint or the collective (FTRUN_WAIT_NOTICE shortens the 30 s /
#     60 s schedule) until the timeout's error.
# Every multi-process run is under `timeout`.
set -euo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_numeric.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
one_line() {  # the output holds exactly one error line and no stack frames
  [ "$(grep -c "error" <<<"$1")" -eq 1 ] && ! grep -q "frame #" <<<"$1" || { echo "$1"; fail "$2: not one clear error line"; }
}
lora=configs/tiny/lora.yaml
sft=configs/tiny/sft.yaml
steps=(--set training_args.save_steps=1 --set training_args.logging_steps=1)

# --- rope_theta -1: refused at load, naming config.json and the key.
cp -r examples/tiny/model "$T/rope"
python3 - "$T/rope/config.json" <<'PY'
import json, sys
p = sys.argv[1]; j = json.load(open(p)); j["rope_theta"] = -1; json.dump(j, open(p, "w"))
PY
out=$("$FTRUN" $lora --set model_dir="$T/rope" --set training_args.output_dir="$T/rope_out" 2>&1) && fail "rope_theta -1 accepted"
[[ "$out" == *"error: $T/rope/config.json: 'rope_theta' must be a positive number"*"got -1"* ]] || { echo "$out"; fail "rope_theta message"; }
one_line "$out" rope_theta
[ ! -e "$T/rope_out/checkpoint-1" ] || fail "rope_theta: something was trained"
echo "ok: rope_theta -1"

# --- every label masked: the same refusal as a conversation without an assistant turn.
printf '{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}\n{"input_ids": [5, 6], "labels": [-100, -100]}\n' > "$T/masked.jsonl"
out=$("$FTRUN" $lora --set data_dir="$T" --set data_config.train_file=masked.jsonl \
  --set training_args.output_dir="$T/masked_out" 2>&1) && fail "all-masked labels accepted"
[[ "$out" == *"error: $T/masked.jsonl:2: "*"'labels'"*"-100"*"so nothing would be trained"* ]] || { echo "$out"; fail "masked labels message"; }
one_line "$out" masked
printf '{"messages": [{"role": "user", "content": "hi"}]}\n' > "$T/noreply.jsonl"
out=$("$FTRUN" $lora --set data_dir="$T" --set data_config.train_file=noreply.jsonl \
  --set training_args.output_dir="$T/noreply_out" 2>&1) && fail "no assistant turn accepted"
[[ "$out" == *"error: $T/noreply.jsonl:1: "*"so nothing would be trained"* ]] || { echo "$out"; fail "messages message"; }
echo "ok: all labels masked"

# Checks a stopped run: the error names the step, checkpoint-(step-1) is the newest and
# intact, nothing of the step was saved or logged, no temp directory was left.
check_stopped() {  # NAME OUT_DIR STEP LOG
  local name=$1 d=$2 step=$3 log=$4 before=$(($3 - 1))
  grep -q "training stopped at step $step: loss nan" "$log" || { cat "$log"; fail "$name: no stop at step $step"; }
  grep -q "the newest checkpoint is $d/checkpoint-$before (set nonfinite: skip" "$log" || { cat "$log"; fail "$name: newest checkpoint not named"; }
  [ -f "$d/checkpoint-$before/COMPLETE" ] || fail "$name: checkpoint-$before missing"
  [ "$(ls "$d" | grep -c '^checkpoint-')" -eq "$before" ] || { ls -la "$d"; fail "$name: a checkpoint after step $before exists"; }
  ! ls -a "$d" | grep -q 'tmp' || { ls -la "$d"; fail "$name: a temp directory was left"; }
  ! grep -q "\"step\":$step[,}]" "$d/metrics.jsonl" || { cat "$d/metrics.jsonl"; fail "$name: step $step was logged"; }
  grep -q "frame #" "$log" && { cat "$log"; fail "$name: stack frames"; }
  return 0
}

# --- NaN mid-run from a huge learning rate, 1 rank (LoRA, ZeRO-0).
"$FTRUN" $lora "${steps[@]}" --set training_args.max_steps=4 --set training_args.learning_rate=3e37 \
  --set training_args.output_dir="$T/lr" > "$T/lr.log" 2>&1 && { cat "$T/lr.log"; fail "huge lr: training went on"; }
check_stopped huge_lr "$T/lr" 2 "$T/lr.log"
grep -q "first non-finite output: model.layers.0;" "$T/lr.log" || { cat "$T/lr.log"; fail "huge lr: module not named"; }
echo "ok: NaN mid-run stops at step 2 naming model.layers.0"

# --- the same at 2 ranks, ZeRO-3 (full fine-tuning: every unit can be re-run gathered).
timeout 120 "$FTRUN" --nproc-per-node 2 $sft --set zero_stage=3 --set collective_timeout=60 "${steps[@]}" \
  --set training_args.max_steps=4 --set training_args.learning_rate=3e37 --set training_args.output_dir="$T/z3" \
  > "$T/z3.log" 2>&1 && { cat "$T/z3.log"; fail "ZeRO-3 huge lr: training went on"; }
check_stopped zero3_huge_lr "$T/z3" 2 "$T/z3.log"
grep -q "first non-finite output: model.layers.[0-9]*;" "$T/z3.log" || { cat "$T/z3.log"; fail "ZeRO-3: module not named"; }
echo "ok: ZeRO-3 2 ranks stop at step 2 naming the module"

# --- NaN in the last rank's loss only: every rank stops at step 3 (nobody waits for the other).
FTRUN_TEST_NAN_LOSS_AT_STEP=3 timeout 120 "$FTRUN" --nproc-per-node 2 $lora --set zero_stage=3 --set collective_timeout=60 \
  "${steps[@]}" --set training_args.max_steps=5 --set training_args.output_dir="$T/one" > "$T/one.log" 2>&1 \
  && { cat "$T/one.log"; fail "one rank's NaN: training went on"; }
check_stopped one_rank_nan "$T/one" 3 "$T/one.log"
grep -q "timed out\|Timed out" "$T/one.log" && { cat "$T/one.log"; fail "one rank's NaN: a rank waited for the other"; }
echo "ok: a NaN on one rank stops both at step 3"

# --- nonfinite: skip, 1 rank: step 3 skipped, training goes on; a resume after it is exact.
FTRUN_TEST_NAN_LOSS_AT_STEP=3 "$FTRUN" $lora --set nonfinite=skip "${steps[@]}" --set training_args.max_steps=5 \
  --set training_args.output_dir="$T/skip" > "$T/skip.log" 2>&1 || { cat "$T/skip.log"; fail "skip mode failed"; }
grep -q "warning: step 3: loss nan, grad norm [0-9.]*: step skipped (nonfinite: skip; 1 skipped so far)" "$T/skip.log" \
  || { cat "$T/skip.log"; fail "skip: no warning naming step 3"; }
grep -qx '{"epoch":[0-9.]*,"skipped_steps":1,"step":3}' "$T/skip/metrics.jsonl" || { cat "$T/skip/metrics.jsonl"; fail "skip: no skipped_steps record"; }
grep -q '"loss":[0-9.]*,"step":5' "$T/skip/metrics.jsonl" || { cat "$T/skip/metrics.jsonl"; fail "skip: did not train to step 5"; }
[ -f "$T/skip/adapter_model.safetensors" ] && [ -f "$T/skip/checkpoint-5/COMPLETE" ] || fail "skip: no final adapter"
mkdir "$T/skip2"
cp -r "$T/skip/checkpoint-3" "$T/skip/metrics.jsonl" "$T/skip2/"
"$FTRUN" $lora --set nonfinite=skip "${steps[@]}" --set training_args.max_steps=5 --set training_args.output_dir="$T/skip2" \
  --resume 3 > "$T/skip2.log" 2>&1 || { cat "$T/skip2.log"; fail "skip: resume after the skipped step"; }
cmp -s "$T/skip/adapter_model.safetensors" "$T/skip2/adapter_model.safetensors" || fail "skip: the resumed run differs"
echo "ok: nonfinite: skip goes on, records the skip, resumes exactly"

# --- nonfinite: skip, 2 ranks ZeRO-3, the NaN on the last rank only.
FTRUN_TEST_NAN_LOSS_AT_STEP=2 timeout 120 "$FTRUN" --nproc-per-node 2 $lora --set nonfinite=skip --set zero_stage=3 \
  --set collective_timeout=60 "${steps[@]}" --set training_args.max_steps=3 --set training_args.output_dir="$T/skipz3" \
  > "$T/skipz3.log" 2>&1 || { cat "$T/skipz3.log"; fail "ZeRO-3 skip mode failed"; }
grep -qx '{"epoch":[0-9.]*,"skipped_steps":1,"step":2}' "$T/skipz3/metrics.jsonl" || { cat "$T/skipz3/metrics.jsonl"; fail "ZeRO-3 skip: no record"; }
[ -f "$T/skipz3/checkpoint-3/COMPLETE" ] || fail "ZeRO-3 skip: did not finish"
echo "ok: nonfinite: skip at 2 ranks"

# --- waiting says what it waits for (notices after 0.3 s, then every 0.5 s; timeouts 3-4 s).
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rank_env() { echo "RANK=$1 WORLD_SIZE=2 LOCAL_RANK=$1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$2 FTRUN_WAIT_NOTICE=0.3,0.5"; }
P=$(port)
env $(rank_env 0 "$P") timeout 60 "$FTRUN" $lora --set collective_timeout=3 --set training_args.output_dir="$T/w0" > "$T/w0.log" 2>&1 \
  && fail "rank 0 alone: no error"
grep -q "ftrun: rendezvous: rank 0 has waited [0-9.]* s (timeout 3 s) for the other ranks at its TCPStore 127.0.0.1:$P: 1 of 2 joined; missing rank(s) 1" "$T/w0.log" \
  || { cat "$T/w0.log"; fail "rank 0 alone: no notice naming rank 1 and the endpoint"; }
[ "$(grep -c "has waited" "$T/w0.log")" -ge 3 ] || { cat "$T/w0.log"; fail "rank 0 alone: notices did not repeat"; }
grep -q "error: rendezvous: only 1 of 2 ranks" "$T/w0.log" || { cat "$T/w0.log"; fail "rank 0 alone: no timeout error"; }
env $(rank_env 1 "$(port)") timeout 60 "$FTRUN" $lora --set collective_timeout=3 --set training_args.output_dir="$T/w1" > "$T/w1.log" 2>&1 \
  && fail "rank 1 alone: no error"
grep -q "rendezvous: rank 1 of 2 has waited [0-9.]* s (timeout 3 s) for rank 0's TCPStore at 127.0.0.1:[0-9]*" "$T/w1.log" \
  || { cat "$T/w1.log"; fail "rank 1 alone: no notice naming rank 0's endpoint"; }
echo "ok: rendezvous notices"
# Rank 1 stops making progress after step 1 (and sleeps): rank 0 waits in a collective.
P=$(port)
for r in 0 1; do
  env $(rank_env $r "$P") FTRUN_TEST_STALL_AFTER_STEP=1 timeout 40 "$FTRUN" $lora --set collective_timeout=4 \
    --set training_args.max_steps=3 --set training_args.output_dir="$T/stall" > "$T/stall$r.log" 2>&1 &
done
rc0=0; wait %1 || rc0=$?
kill %2 2>/dev/null || true; wait %2 || true
[ "$rc0" -ne 0 ] && [ "$rc0" -ne 124 ] || { cat "$T/stall0.log"; fail "stalled peer: rank 0 did not fail on its own (rc $rc0)"; }
grep -q "ftrun: rank 0 of 2 has waited [0-9.]* s (collective_timeout 4 s) in gloo [a-z_]* #[0-9]* (.*); not arrived: rank(s) 1" "$T/stall0.log" \
  || { cat "$T/stall0.log"; fail "stalled peer: no notice naming the collective and rank 1"; }
grep -q "error: gloo [a-z_]* failed on rank 0 of 2" "$T/stall0.log" || { cat "$T/stall0.log"; fail "stalled peer: no timeout error"; }
echo "ok: collective notices"
echo "PASS"
