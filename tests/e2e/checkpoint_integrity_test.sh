#!/usr/bin/env bash
# Damaged checkpoints (issue 16, "Silently accepted"): a newest checkpoint changed in place but
# still marked COMPLETE. For each damage, `--resume yes` skips it with a warning naming the
# file and resumes from the newest intact one (checkpoint-10), and `--resume 20` is an error
# naming the file:
#   - trainer_state.json's global_step set to 9999;
#   - an optimizer shard overwritten with NaN bytes (header kept), and with other bytes;
#   - an optimizer shard from another run with a different layout (LoRA r=4);
#   - the RNG file deleted.
# A checkpoint written before checksums (COMPLETE holding only the step) still resumes, with a
# note; the same global_step damage in one is still found. A checkpoint beyond the run
# (global_step > max_steps) is an error naming its trainer_state.json.
set -euo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_ckpt.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--set training_args.max_steps=20 --set training_args.save_steps=10 --set training_args.logging_steps=5)
run() { out=$1; shift; "$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$out" "$@"; }

run "$T/base" > "$T/base.log" 2>&1 || { cat "$T/base.log"; fail "base run"; }
run "$T/other" --set peft_config.r=4 > "$T/other.log" 2>&1 || { cat "$T/other.log"; fail "r=4 run"; }
for n in 10 20; do [ -f "$T/base/checkpoint-$n/COMPLETE" ] || fail "checkpoint-$n missing"; done
line1=$(head -n1 "$T/base/checkpoint-20/COMPLETE")
[ "$line1" = "20" ] || fail "COMPLETE's first line is '$line1', not the step"
grep -q "^xxh64 [0-9a-f]\{16\} [0-9]* optimizer/rank-0.safetensors$" "$T/base/checkpoint-20/COMPLETE" \
  || { cat "$T/base/checkpoint-20/COMPLETE"; fail "COMPLETE lacks the shard's checksum"; }

# damage NAME FILE(relative to checkpoint-20) ACTION
check() {
  local name=$1 file=$2 d="$T/$1"
  rm -rf "$d"
  cp -r "$T/base" "$d"
  local ck="$d/checkpoint-20"
  case $name in
    global_step)
      python3 - "$ck/trainer_state.json" <<'PY'
import json, sys
p = sys.argv[1]; j = json.load(open(p)); j["global_step"] = 9999; json.dump(j, open(p, "w"))
PY
      ;;
    nan_shard)
      python3 - "$ck/optimizer/rank-0.safetensors" <<'PY'
import struct, sys
p = sys.argv[1]; raw = bytearray(open(p, "rb").read()); n = 8 + struct.unpack("<Q", raw[:8])[0]
nan = struct.pack("<f", float("nan"))
for i in range(n, len(raw) - 3, 4): raw[i:i + 4] = nan
open(p, "wb").write(raw)
PY
      ;;
    other_bytes) head -c "$(stat -c %s "$ck/optimizer/rank-0.safetensors")" /dev/urandom > "$ck/optimizer/rank-0.safetensors" ;;
    other_run) cp "$T/other/checkpoint-20/optimizer/rank-0.safetensors" "$ck/optimizer/rank-0.safetensors" ;;
    rng_deleted) rm "$ck/rng/rank-0.safetensors" ;;
  esac
  local out
  out=$(run "$d" --resume 20 2>&1) && fail "$name: --resume 20 accepted a damaged checkpoint"
  [[ "$out" == *"error: --resume 20: $ck is damaged: $ck/$file"* ]] || { echo "$out"; fail "$name: --resume 20 message"; }
  [ "$(echo "$out" | grep -c "error")" -eq 1 ] && ! echo "$out" | grep -q "frame #" \
    || { echo "$out"; fail "$name: the error is not one clear line"; }
  run "$d" --resume yes > "$d.log" 2>&1 || { cat "$d.log"; fail "$name: --resume yes"; }
  grep -q "skipping damaged checkpoint-20: $ck/$file" "$d.log" || { cat "$d.log"; fail "$name: no warning naming $file"; }
  grep -q "resumed from $d/checkpoint-10" "$d.log" || { cat "$d.log"; fail "$name: did not fall back to checkpoint-10"; }
  # The fallback retrains steps 11-20 and rewrites checkpoint-20 whole: it is intact again.
  run "$d" --resume 20 --set training_args.max_steps=30 > "$d.2.log" 2>&1 || { cat "$d.2.log"; fail "$name: rewritten checkpoint-20"; }
  echo "ok: $name"
}
check global_step trainer_state.json
check nan_shard optimizer/rank-0.safetensors
check other_bytes optimizer/rank-0.safetensors
check other_run optimizer/rank-0.safetensors
check rng_deleted rng/rank-0.safetensors

# Written before checksums: resumes with a note; damage that shows without checksums is found.
cp -r "$T/base" "$T/legacy"
for n in 10 20; do echo $n > "$T/legacy/checkpoint-$n/COMPLETE"; done
run "$T/legacy" --resume yes --set training_args.max_steps=25 > "$T/legacy.log" 2>&1 || { cat "$T/legacy.log"; fail "legacy resume"; }
grep -q "written before checkpoints carried checksums" "$T/legacy.log" || { cat "$T/legacy.log"; fail "legacy: no note"; }
grep -q "resumed from $T/legacy/checkpoint-20" "$T/legacy.log" || { cat "$T/legacy.log"; fail "legacy: not from checkpoint-20"; }
rm -rf "$T/legacy"
cp -r "$T/base" "$T/legacy"
for n in 10 20; do echo $n > "$T/legacy/checkpoint-$n/COMPLETE"; done
rm "$T/legacy/checkpoint-20/rng/rank-0.safetensors"
run "$T/legacy" --resume yes > "$T/legacy2.log" 2>&1 || { cat "$T/legacy2.log"; fail "legacy fallback"; }
grep -q "skipping damaged checkpoint-20: $T/legacy/checkpoint-20/rng/rank-0.safetensors: missing" "$T/legacy2.log" \
  || { cat "$T/legacy2.log"; fail "legacy: RNG damage not named"; }

# A checkpoint beyond the run trains nothing: an error, not a silent no-op.
out=$(run "$T/base" --resume 20 --set training_args.max_steps=15 2>&1) && fail "resume beyond max_steps accepted"
[[ "$out" == *"$T/base/checkpoint-20/trainer_state.json: global_step 20 is beyond this run's 15 steps"* ]] \
  || { echo "$out"; fail "beyond-the-run message"; }
echo "e2e checkpoint_integrity: passed"
