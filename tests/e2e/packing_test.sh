#!/usr/bin/env bash
# Packing (`packing: true`, issue 18) end to end on the embedded tiny models:
#  - the run packs (log line), and an epoch is ceil(rows / global batch) steps: the schedule
#    counts packed rows, not samples;
#  - exact resume with packing, 1 rank (LoRA on Llama; P-Tuning v2 on GLM-4): a run SIGKILLed
#    while writing checkpoint-20 and resumed from checkpoint-10 logs exactly the straight
#    run's losses and writes the same adapter bytes;
#  - ZeRO-3 on 2 ranks (gloo, spawned by ftrun, under `timeout`): full SFT with packing gives
#    the 1-process losses (1e-5), and a 2-rank run stopped at step 10 and resumed matches the
#    straight 2-rank run bit for bit;
#  - a checkpoint written with packing does not resume without it (the position counts rows);
#  - packing without a row length (max_input_length + max_output_length = 0) is refused.
set -euo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_packing.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--set packing=true --set training_args.logging_steps=1 --set training_args.save_steps=10)

same_run() {  # same_run DIR_A DIR_B FIRST_STEP: losses from FIRST_STEP on and the weights identical
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys, os
a_dir, b_dir, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
def losses(d):
    return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "loss" in r}
a, b = losses(a_dir), losses(b_dir)
assert max(a) == max(b), (max(a), max(b))
for step in range(first, max(a) + 1):
    assert a[step] == b[step], (step, a[step], b[step])
files = [f for f in os.listdir(a_dir) if f.endswith(".safetensors")]
assert files, os.listdir(a_dir)
for f in files:
    assert open(os.path.join(a_dir, f), "rb").read() == open(os.path.join(b_dir, f), "rb").read(), f
print("identical from step", first, files)
PY
}

# --- steps per epoch count packed rows ---
"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.max_steps=-1 --set training_args.num_train_epochs=1 \
  --set training_args.save_strategy=no --set training_args.output_dir="$T/epoch" > "$T/epoch.log" 2>&1 \
  || { cat "$T/epoch.log"; fail "one packed epoch"; }
rows=$(sed -n 's/.*packing: \([0-9]*\) samples in \([0-9]*\) rows.*/\2/p' "$T/epoch.log")
samples=$(sed -n 's/.*packing: \([0-9]*\) samples in.*/\1/p' "$T/epoch.log")
[ -n "$rows" ] || { cat "$T/epoch.log"; fail "no packing line"; }
[ "$rows" -lt "$samples" ] || fail "packing made $rows rows of $samples samples"
steps=$(python3 -c "import json; print(max(json.loads(l)['step'] for l in open('$T/epoch/metrics.jsonl') if 'loss' in l))")
[ "$steps" -eq $(( (rows + 7) / 8 )) ] || fail "one epoch of $rows rows at batch 8 ran $steps steps"
echo "one epoch: $samples samples in $rows rows, $steps steps"

# --- exact resume, 1 rank ---
for cfg in configs/tiny/lora.yaml configs/tiny/glm4-ptuning_v2.yaml; do
  name=$(basename "$cfg" .yaml)
  run() { "$FTRUN" "$cfg" "${common[@]}" --set training_args.max_steps=20 "$@"; }
  run --set training_args.output_dir="$T/$name-a" > "$T/a.log" 2>&1 || { cat "$T/a.log"; fail "$name: straight run"; }
  set +e
  FTRUN_TEST_KILL_IN_SAVE=20 run --set training_args.output_dir="$T/$name-b" > "$T/b.log" 2>&1
  rc=$?
  set -e
  [ $rc -eq 137 ] || { cat "$T/b.log"; fail "$name: expected SIGKILL (137), got $rc"; }
  run --set training_args.output_dir="$T/$name-b" --resume yes > "$T/b2.log" 2>&1 || { cat "$T/b2.log"; fail "$name: resume"; }
  grep -q "resumed from .*checkpoint-10" "$T/b2.log" || { cat "$T/b2.log"; fail "$name: did not resume from checkpoint-10"; }
  same_run "$T/$name-a" "$T/$name-b" 11 || fail "$name: resumed packed run differs"
done

# A packed checkpoint does not resume unpacked.
out=$("$FTRUN" configs/tiny/lora.yaml --set training_args.max_steps=20 --set training_args.output_dir="$T/lora-b" \
      --resume 10 2>&1) && fail "resuming a packed checkpoint without packing succeeded"
[[ "$out" == *"packing changed from true to false"* ]] || { echo "$out"; fail "packing-changed message"; }

# --- ZeRO-3, 2 ranks (gloo) ---
z3=(configs/tiny/sft.yaml "${common[@]}" --set zero_stage=3 --set training_args.lr_scheduler_type=constant)
"$FTRUN" "${z3[@]}" --set training_args.max_steps=20 --set training_args.output_dir="$T/z-one" > "$T/z1.log" 2>&1 \
  || { cat "$T/z1.log"; fail "ZeRO-3 1 process"; }
two() { timeout 240 "$FTRUN" --nproc-per-node 2 "${z3[@]}" --set training_args.per_device_train_batch_size=4 "$@"; }
two --set training_args.max_steps=20 --set training_args.output_dir="$T/z-a" > "$T/za.log" 2>&1 \
  || { cat "$T/za.log"; fail "ZeRO-3 2 ranks"; }
grep -q "2 rank(s), ZeRO stage 3" "$T/za.log" || { cat "$T/za.log"; fail "not 2 ranks at ZeRO-3"; }
python3 - "$T/z-one/metrics.jsonl" "$T/z-a/metrics.jsonl" <<'PY' || fail "ZeRO-3 2 ranks: losses differ from 1 process"
import json, sys
a, b = ({r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r} for p in sys.argv[1:3])
assert sorted(a) == sorted(b) and len(a) == 20, (sorted(a), sorted(b))
for s in a:
    assert abs(a[s] - b[s]) <= 1e-5 * abs(a[s]), (s, a[s], b[s])
print("2 ranks match 1 process at", len(a), "steps")
PY
two --set training_args.max_steps=10 --set training_args.output_dir="$T/z-b" > "$T/zb.log" 2>&1 \
  || { cat "$T/zb.log"; fail "ZeRO-3 2 ranks, first 10 steps"; }
two --set training_args.max_steps=20 --set training_args.output_dir="$T/z-b" --resume 10 > "$T/zb2.log" 2>&1 \
  || { cat "$T/zb2.log"; fail "ZeRO-3 2 ranks, resume"; }
grep -q "resumed from .*checkpoint-10" "$T/zb2.log" || { cat "$T/zb2.log"; fail "ZeRO-3: did not resume"; }
same_run "$T/z-a" "$T/z-b" 11 || fail "ZeRO-3 2 ranks: resumed packed run differs"

# --- refused without a row length ---
out=$("$FTRUN" configs/tiny/lora.yaml --set packing=true --set max_input_length=0 --set max_output_length=0 \
      --set training_args.output_dir="$T/none" 2>&1) && fail "packing without a row length succeeded"
[[ "$out" == *"packing"*"max_input_length + max_output_length is 0"* ]] || { echo "$out"; fail "no-row-length message"; }
echo "packing e2e: all passed"
