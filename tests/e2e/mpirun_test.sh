#!/usr/bin/env bash
# `mpirun -np 2 ftrun CONFIG` as a user runs it: each process is a rank (OpenMPI env), with
# the mpi backend and with gloo under mpirun, at ZeRO-2 and ZeRO-3. The logged losses must
# equal a 1-process run on the same global batch (2 x 4 = 8) to 1e-5 relative, and only
# rank 0 writes the outputs.
set -euo pipefail
FTRUN=$1
MPIRUN=${MPIRUN:-mpirun}
T=$(mktemp -d /tmp/ftrun_e2e_mpi.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--set training_args.max_steps=20 --set training_args.logging_steps=5 --set training_args.save_steps=10)
"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/one" > "$T/one.log" 2>&1 \
  || { cat "$T/one.log"; fail "single-process run"; }
passed=0
for backend in mpi gloo; do
  for stage in 2 3; do
    out="$T/$backend-$stage"
    timeout 240 "$MPIRUN" -np 2 --allow-run-as-root --oversubscribe --bind-to none \
      "$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.per_device_train_batch_size=4 \
      --set comm_backend=$backend --set zero_stage=$stage --set training_args.output_dir="$out" > "$T/mpi.log" 2>&1 \
      || { cat "$T/mpi.log"; fail "mpirun $backend stage $stage"; }
    grep -q "2 rank(s), ZeRO stage $stage" "$T/mpi.log" || { cat "$T/mpi.log"; fail "not 2 ranks at stage $stage"; }
    python3 - "$T/one/metrics.jsonl" "$out/metrics.jsonl" <<'PY' || fail "mpirun $backend stage $stage: losses differ"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
b = [json.loads(l)["loss"] for l in open(sys.argv[2]) if '"loss"' in l]
assert len(a) == len(b) == 4, (a, b)
for x, y in zip(a, b):
    assert abs(x - y) <= 1e-5 * abs(x), (a, b)
PY
    [ -f "$out/checkpoint-20/optimizer/rank-1.safetensors" ] || fail "rank 1 did not write its optimizer shard"
    passed=$((passed+1))
  done
done

# The other two strategies at 2 ranks, ZeRO-2 and ZeRO-3, against their 1-rank runs.
for strategy in ptuning_v2 sft; do
  "$FTRUN" configs/tiny/$strategy.yaml "${common[@]}" --set training_args.output_dir="$T/$strategy-one" > "$T/one.log" 2>&1 \
    || { cat "$T/one.log"; fail "$strategy single-process run"; }
  for stage in 2 3; do
    out="$T/$strategy-$stage"
    timeout 240 "$MPIRUN" -np 2 --allow-run-as-root --oversubscribe --bind-to none \
      "$FTRUN" configs/tiny/$strategy.yaml "${common[@]}" --set training_args.per_device_train_batch_size=4 \
      --set zero_stage=$stage --set training_args.output_dir="$out" > "$T/mpi.log" 2>&1 \
      || { cat "$T/mpi.log"; fail "mpirun $strategy stage $stage"; }
    python3 - "$T/$strategy-one/metrics.jsonl" "$out/metrics.jsonl" <<'PY' || fail "mpirun $strategy stage $stage: losses differ"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
b = [json.loads(l)["loss"] for l in open(sys.argv[2]) if '"loss"' in l]
assert len(a) == len(b) == 4, (a, b)
for x, y in zip(a, b):
    assert abs(x - y) <= 1e-5 * abs(x), (a, b)
PY
    passed=$((passed+1))
  done
done

# Resume across world sizes and stages: a 1-rank stage-0 checkpoint continued by 2 ranks at
# ZeRO-3, and a 2-rank ZeRO-2 checkpoint continued by 1 rank; the optimizer state is
# re-sharded from its layout and the losses of steps 11-20 must match the straight run.
compare_tail() {
  python3 - "$T/one/metrics.jsonl" "$1/metrics.jsonl" <<'PY' || fail "resume across world sizes: losses differ ($1)"
import json, sys
a = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r}
b = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2])) if "loss" in r}
for step in (15, 20):
    assert abs(a[step] - b[step]) <= 1e-6 * abs(a[step]), (step, a[step], b[step])
PY
}
mkdir -p "$T/up" && cp -r "$T/one/checkpoint-10" "$T/up/"
timeout 240 "$MPIRUN" -np 2 --allow-run-as-root --oversubscribe --bind-to none \
  "$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.per_device_train_batch_size=4 \
  --set zero_stage=3 --set training_args.output_dir="$T/up" --resume yes > "$T/up.log" 2>&1 \
  || { cat "$T/up.log"; fail "2-rank resume of a 1-rank checkpoint"; }
grep -q "written by 1 rank(s) at ZeRO stage 0" "$T/up.log" || { cat "$T/up.log"; fail "did not resume the 1-rank checkpoint"; }
compare_tail "$T/up"
mkdir -p "$T/down" && cp -r "$T/gloo-2/checkpoint-10" "$T/down/"
"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/down" --resume yes > "$T/down.log" 2>&1 \
  || { cat "$T/down.log"; fail "1-rank resume of a 2-rank checkpoint"; }
grep -q "written by 2 rank(s) at ZeRO stage 2" "$T/down.log" || { cat "$T/down.log"; fail "did not resume the 2-rank checkpoint"; }
compare_tail "$T/down"
passed=$((passed+1))
echo "e2e mpirun: $passed passed"
