#!/usr/bin/env bash
# Bad input through the CLI: each case must exit non-zero with a message that names the
# file (and line or key) and says what was expected.
set -uo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_err.XXXXXX)
trap 'rm -rf "$T"' EXIT
failures=0
expect_error() {  # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then echo "FAIL $name: exited 0"; failures=$((failures+1)); return; fi
  if [[ "$out" != *"$want"* ]]; then
    echo "FAIL $name: output lacks '$want':"; echo "$out"; failures=$((failures+1)); return
  fi
  echo "ok   $name"
}

expect_error missing-config "$T/nope.yaml" "$FTRUN" "$T/nope.yaml"
sed 's/learning_rate:/learning_rat:/' configs/tiny/lora.yaml > "$T/typo.yaml"
expect_error unknown-key "did you mean 'learning_rate'" "$FTRUN" "$T/typo.yaml"
expect_error bad-set "training_args.max_steps" "$FTRUN" configs/tiny/lora.yaml --set training_args.max_steps=abc

# In a multi-process run an error names its rank, even one found before the rendezvous.
expect_error rank-in-config-error "rank 1: error:" env RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 \
  MASTER_PORT=1 "$FTRUN" "$T/typo.yaml"
expect_error rank-in-eval-error "rank 1: error: $T/none: no trained model" env RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 \
  MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$FTRUN" eval configs/tiny/lora.yaml --checkpoint "$T/none"

mkdir -p "$T/data"
head -3 examples/tiny/train.jsonl > "$T/data/train.jsonl"
echo '{"messages": [{"role": "user", "content": 7}]}' >> "$T/data/train.jsonl"
expect_error bad-record "train.jsonl:4" "$FTRUN" configs/tiny/lora.yaml --data-dir "$T/data" \
  --set training_args.output_dir="$T/out"

cp -r examples/tiny/model "$T/model"
truncate -s -10 "$T/model/model.safetensors"
expect_error truncated-weights "$T/model/model.safetensors" "$FTRUN" configs/tiny/lora.yaml \
  --model-dir "$T/model" --set training_args.output_dir="$T/out"

# use_dora is implemented now; an option ftrun does not implement is still refused, and
# use_dora takes only true or false.
expect_error bad-peft "peft_config.modules_to_save: is not supported by ftrun yet" "$FTRUN" configs/tiny/lora.yaml \
  --set 'peft_config.modules_to_save=[lm_head]' --set training_args.output_dir="$T/out"
expect_error bad-dora "peft_config.use_dora: expected true or false" "$FTRUN" configs/tiny/lora.yaml \
  --set peft_config.use_dora=sometimes --set training_args.output_dir="$T/out"
expect_error generate-no-model "neither a model directory" "$FTRUN" generate "$T" --prompt hi

if [ $failures -ne 0 ]; then echo "e2e cli errors: $failures failed"; exit 1; fi
echo "e2e cli errors: 8 passed"
