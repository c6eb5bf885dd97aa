#!/usr/bin/env bash
# Outputs never destroy what is not ftrun's own (issue 16, "Data loss"): every example as a
# regression case, each a clear one-line error and no user file changed:
#   - `ftrun merge ADAPTER /tmp/x/notes.txt` onto a user's file, a user's directory, or a full-SFT
#     run's output (checkpoints, metrics); --overwrite replaces explicitly; a second merge into
#     the same directory replaces the first (ftrun's own model output);
#   - `ftrun make-tiny-model` onto an unrelated directory;
#   - `ftrun eval --output` onto a user's file;
#   - full SFT with output_dir == model_dir (or inside it): refused before anything is written,
#     the base's weights unchanged byte for byte; training into a user's non-empty directory is
#     refused unless training_args.overwrite_output_dir;
#   - a resume keeps metrics.jsonl's records up to the resume step (HF log_history semantics),
#     and a resume that fails leaves metrics.jsonl as it was;
#   - output_dir "" is refused and writes nothing in the current directory.
set -euo pipefail
FTRUN=$(realpath "$1")
T=$(mktemp -d /tmp/ftrun_e2e_outputs.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_error NAME PATTERN CMD...: CMD fails with one "error:" line containing PATTERN, no frames.
expect_error() {
  local name=$1 pattern=$2 out
  shift 2
  out=$("$@" 2>&1) && { echo "$out"; fail "$name: succeeded"; }
  [[ "$out" == *"$pattern"* ]] || { echo "$out"; fail "$name: message lacks '$pattern'"; }
  [ "$(echo "$out" | grep -c "error")" -eq 1 ] && ! echo "$out" | grep -q "frame #" \
    || { echo "$out"; fail "$name: not one clear error line"; }
  echo "ok: $name"
}
snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
common=(--set training_args.max_steps=10 --set training_args.save_steps=5 --set training_args.logging_steps=1)

"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/lora" > "$T/lora.log" 2>&1 \
  || { cat "$T/lora.log"; fail "lora run"; }

# merge onto a user's file: refused, the file unchanged.
mkdir -p "$T/x"
echo notes > "$T/x/notes.txt"
expect_error "merge onto a file" "$T/x/notes.txt: exists and is not an ftrun model directory (a file)" \
  "$FTRUN" merge "$T/lora" "$T/x/notes.txt"
[ "$(cat "$T/x/notes.txt")" = notes ] || fail "notes.txt changed"
# onto a directory of notes.
before=$(snapshot "$T/x")
expect_error "merge onto a user directory" "$T/x: exists and is not an ftrun model directory" "$FTRUN" merge "$T/lora" "$T/x"
[ "$(snapshot "$T/x")" = "$before" ] || fail "the notes directory changed"
# onto a full-SFT run's output (its checkpoints and metrics).
"$FTRUN" configs/tiny/sft.yaml "${common[@]}" --set training_args.output_dir="$T/sft" > "$T/sft.log" 2>&1 \
  || { cat "$T/sft.log"; fail "sft run"; }
before=$(snapshot "$T/sft")
expect_error "merge onto a training output" "$T/sft: exists and is not an ftrun model directory" "$FTRUN" merge "$T/lora" "$T/sft"
[ "$(snapshot "$T/sft")" = "$before" ] || fail "the SFT output changed"
# ftrun's own merged model is replaced; --overwrite is the explicit way for anything else.
"$FTRUN" merge "$T/lora" "$T/merged" > "$T/m1.log" 2>&1 || { cat "$T/m1.log"; fail "merge"; }
"$FTRUN" merge "$T/lora" "$T/merged" > "$T/m2.log" 2>&1 || { cat "$T/m2.log"; fail "merge into an earlier merge"; }
"$FTRUN" merge "$T/lora" "$T/x/notes.txt" --overwrite > "$T/m3.log" 2>&1 || { cat "$T/m3.log"; fail "merge --overwrite"; }
[ -f "$T/x/notes.txt/config.json" ] || fail "--overwrite did not write the model"
ls -a "$T" | grep -q "\.tmp" && fail "a temp directory was left: $(ls -a "$T")"
expect_error "merge into the adapter" "must not contain, or lie inside" "$FTRUN" merge "$T/lora" "$T/lora/merged"

# make-tiny-model onto an unrelated directory.
mkdir -p "$T/mine"
echo data > "$T/mine/data.txt"
before=$(snapshot "$T/mine")
expect_error "make-tiny-model onto a user directory" "$T/mine: exists and is not an ftrun model directory" \
  "$FTRUN" make-tiny-model "$T/mine" --corpus examples/tiny/tokenizer_corpus.txt --vocab-size 400 --pretrain-steps 0
[ "$(snapshot "$T/mine")" = "$before" ] || fail "make-tiny-model changed the user directory"
for i in 1 2; do
  "$FTRUN" make-tiny-model "$T/tiny" --corpus examples/tiny/tokenizer_corpus.txt --vocab-size 400 --pretrain-steps 0 \
    > "$T/tiny.log" 2>&1 || { cat "$T/tiny.log"; fail "make-tiny-model run $i"; }
done

# eval --output onto a user's file.
echo "my results" > "$T/x/results.txt"
expect_error "eval --output onto a user file" "$T/x/results.txt: exists and is not an ftrun predictions file" \
  "$FTRUN" eval configs/tiny/lora.yaml --set training_args.output_dir="$T/lora" --output "$T/x/results.txt"
[ "$(cat "$T/x/results.txt")" = "my results" ] || fail "results.txt changed"

# Full SFT with output_dir == model_dir (and inside it): nothing written, the base unchanged.
cp -r examples/tiny/model "$T/base"
before=$(snapshot "$T/base")
expect_error "output_dir == model_dir" "is the base model directory (model_dir" \
  "$FTRUN" configs/tiny/sft.yaml "${common[@]}" --set model_dir="$T/base" --set training_args.output_dir="$T/base"
expect_error "output_dir inside model_dir" "is inside the base model directory (model_dir" \
  "$FTRUN" configs/tiny/sft.yaml "${common[@]}" --set model_dir="$T/base" --set training_args.output_dir="$T/base/out"
[ "$(snapshot "$T/base")" = "$before" ] || fail "the base model changed"
# A user's non-empty directory as output_dir: refused unless overwrite_output_dir.
before=$(snapshot "$T/mine")
expect_error "output_dir a user directory" "$T/mine: exists and is not an ftrun training output" \
  "$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/mine"
[ "$(snapshot "$T/mine")" = "$before" ] || fail "training wrote into the user directory"
"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/mine" \
  --set training_args.overwrite_output_dir=true > "$T/mine.log" 2>&1 || { cat "$T/mine.log"; fail "overwrite_output_dir"; }
[ "$(cat "$T/mine/data.txt")" = data ] || fail "overwrite_output_dir removed the user's file"

# metrics.jsonl survives resume: steps 1-5 kept from the first run, 6-10 from the resume.
cp "$T/lora/metrics.jsonl" "$T/lora.metrics"
rm -rf "$T/lora/checkpoint-10"
"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/lora" --resume yes > "$T/r.log" 2>&1 \
  || { cat "$T/r.log"; fail "resume"; }
python3 - "$T/lora.metrics" "$T/lora/metrics.jsonl" <<'PY' || fail "metrics.jsonl after resume"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
b = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
steps = [r["step"] for r in b if "loss" in r]
assert steps == list(range(1, 11)), steps
assert [r for r in b if r["step"] <= 5] == [r for r in a if r["step"] <= 5], "records before the resume step changed"
assert [r["loss"] for r in b if "loss" in r] == [r["loss"] for r in a if "loss" in r], "resumed losses differ"
PY
# A resume that fails (here: a changed LoRA rank) leaves metrics.jsonl as it was.
cp "$T/lora/metrics.jsonl" "$T/lora.metrics2"
expect_error "failed resume" "peft_config.r changed" \
  "$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/lora" --set peft_config.r=4 --resume yes
cmp -s "$T/lora/metrics.jsonl" "$T/lora.metrics2" || fail "a failed resume changed metrics.jsonl"

# output_dir "": refused, nothing written in the current directory.
mkdir -p "$T/cwd"
before=$(ls -A "$T/cwd")
ROOT=$PWD
(cd "$T/cwd" && expect_error 'output_dir ""' 'training_args.output_dir is empty' \
  "$FTRUN" "$ROOT/configs/tiny/lora.yaml" "${common[@]}" --set model_dir="$ROOT/examples/tiny/model" \
  --set data_dir="$ROOT/examples/tiny" --set 'training_args.output_dir=""')
[ "$(ls -A "$T/cwd")" = "$before" ] || fail "output_dir \"\" wrote into the current directory: $(ls -A "$T/cwd")"
echo "e2e outputs_safety: passed"
