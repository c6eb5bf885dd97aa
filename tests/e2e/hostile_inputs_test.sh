#!/usr/bin/env bash
# Issue 16's hostile inputs through the CLI, the exact commands of its "Why": a YAML alias bomb
# ("billion laughs") and deep nesting, peft_config.r and per_device_train_batch_size of 10^9,
# num_train_epochs 1e30, a directory as data file (train, data, eval), make-tiny-model --vocab-size 1 / 1e9,
# merge --max-shard-size 0 / -1, a Llama adapter merged into a Qwen2 (or GLM-4) base, garbage,
# empty or incomplete trainer_state.json / layout.json, and bounded JSON (config.json,
# DeepSpeed JSON, data records). Each must exit non-zero within seconds with a one-line
# "ftrun: ..." error saying what and where, never libtorch's "frame #" lines (unless --debug
# or FTRUN_DEBUG=1 asks for them), write no output, and leave every input byte-for-byte as it
# was (hashed before and after).
set -uo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_hostile.XXXXXX)
trap 'rm -rf "$T"' EXIT
failures=0
passed=0
fail() { echo "FAIL $1"; failures=$((failures+1)); }
# name, expected substring, command...: non-zero exit, the substring on an "ftrun: " line, no frames.
expect_error() {
  local name=$1 want=$2; shift 2
  local out rc
  out=$(timeout 120 "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then fail "$name: exited 0"; return; fi
  if [ $rc -eq 124 ]; then fail "$name: still running after 120 s"; return; fi
  if [[ "$out" != *"$want"* ]]; then fail "$name: output lacks '$want':"; echo "$out" | head -20; return; fi
  if [[ "$out" == *"frame #"* ]]; then fail "$name: stack frames in the output:"; echo "$out" | head -20; return; fi
  if ! grep -F -- "$want" <<< "$out" | grep -q '^ftrun: '; then
    fail "$name: the error is not one 'ftrun: ...' line:"; echo "$out" | head -20; return
  fi
  echo "ok   $name"; passed=$((passed+1))
}
# Every file below the given paths, hashed (names and contents): equal before and after.
hash_inputs() { find "$@" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; }
absent() {  # name, path: a failed command must not have created it
  if [ -e "$2" ]; then fail "$1: $2 was created"; else passed=$((passed+1)); fi
}
M=examples/tiny/model            # llama
Q=examples/tiny/qwen2-model
G=examples/tiny/glm4-model
CFG=configs/tiny/lora.yaml
OUT="$T/out"
# The repository's example models, data and configs: the files git tracks there.
hash_repo_inputs() { git ls-files -z examples/tiny configs/tiny | sort -z | xargs -0 sha256sum | sha256sum; }
before=$(hash_repo_inputs)

# --- the YAML alias bomb of the issue, at the top level and under a key; deep nesting.
cat > "$T/bomb.yaml" <<'EOF'
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
EOF
# The 20,001st node, counted by hand in document order: the root map 1, a 10 (11), b 91 (102),
# c 820 (922), d 7381 (8303); e's list 8304, e[0] 7381 (15685), e[1]'s list 15686, e[1][0..4]
# 5 x 820 (19786), e[1][5]'s list 19787, e[1][5][0..1] 2 x 91 (19969), e[1][5][2]'s list 19970,
# e[1][5][2][0..2] 3 x 10 (20000): e[1][5][2][3], an alias of a, written on line 1.
start=$SECONDS
expect_error yaml-alias-bomb "$T/bomb.yaml:1: e[1][5][2][3]: the document expands to more than 20000 nodes" \
  "$FTRUN" "$T/bomb.yaml"
[ $((SECONDS - start)) -lt 30 ] || fail "yaml-alias-bomb: took $((SECONDS - start)) s"
{ cat "$CFG"; echo "swanlab:"; sed 's/^/  /' "$T/bomb.yaml"; } > "$T/bomb_under_key.yaml"
a_line=$(($(wc -l < "$CFG") + 2))
expect_error yaml-alias-bomb-under-key "$T/bomb_under_key.yaml:$a_line: swanlab.e[" "$FTRUN" "$T/bomb_under_key.yaml"
expect_error yaml-alias-bomb-under-key-says "]: the document expands to more than 20000 nodes (a config has a few hundred" \
  "$FTRUN" "$T/bomb_under_key.yaml"
python3 -c "print('a: ' + '[' * 20000 + ']' * 20000)" > "$T/deep.yaml"
expect_error yaml-deep-nesting "$T/deep.yaml:1: nested deeper than 64 levels (a config nests a few)" "$FTRUN" "$T/deep.yaml"
out=$("$FTRUN" "$T/deep.yaml" 2>&1)
[[ "$out" != *"bad file"* ]] && passed=$((passed+1)) || fail "yaml-deep-nesting: yaml-cpp's 'bad file' still shown"
expect_error yaml-endless-config "/dev/zero: longer than 4 MiB, the limit for a config file" "$FTRUN" /dev/zero

# --- absurd sizes: an estimate instead of the allocator's error.
expect_error lora-r-1e9 "peft_config.r 1000000000: one module's LoRA matrices alone need at least ~" \
  "$FTRUN" "$CFG" --set training_args.output_dir="$OUT" --set peft_config.r=1000000000
expect_error batch-size-1e9 "training_args.per_device_train_batch_size 1000000000: a micro-batch of that many samples, at one token each, needs at least ~" \
  "$FTRUN" "$CFG" --set training_args.output_dir="$OUT" --set training_args.per_device_train_batch_size=1000000000
absent batch-size-1e9 "$OUT"
# An allocation nothing checks beforehand (a prefix of 10^9 virtual tokens) is named as one,
# one line; --debug and FTRUN_DEBUG=1 keep libtorch's full text.
PT=(configs/tiny/ptuning_v2.yaml --set training_args.output_dir="$OUT" --set peft_config.num_virtual_tokens=1000000000)
expect_error alloc-failure "error: out of memory: one allocation needs ~512 GB; this machine has" "$FTRUN" "${PT[@]}"
out=$("$FTRUN" --debug "${PT[@]}" 2>&1)
[[ "$out" == *"frame #"* && "$out" == *"you tried to allocate 512000000000 bytes"* ]] && passed=$((passed+1)) \
  || { fail "--debug: no full libtorch text"; echo "$out" | head -5; }
out=$(FTRUN_DEBUG=1 "$FTRUN" "${PT[@]}" 2>&1)
[[ "$out" == *"frame #"* ]] && passed=$((passed+1)) || fail "FTRUN_DEBUG=1: no full libtorch text"
rm -rf "$OUT"  # the run's own output directory (its token cache), made before the allocation

# --- step counts that overflow int64 (used to train "-9223372036854775808 steps").
expect_error epochs-1e30 "training_args.num_train_epochs: must be at most 1e9 (the step count, epochs x steps per epoch, is a 64-bit integer), got 1e+30" \
  "$FTRUN" "$CFG" --set training_args.output_dir="$OUT" --set training_args.max_steps=-1 \
  --set training_args.num_train_epochs=1e30
absent epochs-1e30 "$OUT"

# --- a directory as train file (used to say "read error").
mkdir "$T/datadir"
expect_error train-file-directory "$T/datadir: is a directory, expected a .json or .jsonl data file ($CFG: data_config.train_file)" \
  "$FTRUN" "$CFG" --set training_args.output_dir="$OUT" --set data_config.train_file="$T/datadir"
absent train-file-directory "$OUT"
expect_error data-train-file-directory "$T/datadir: is a directory, expected a .json or .jsonl data file ($CFG: data_config.train_file)" \
  "$FTRUN" data "$CFG" --set data_config.train_file="$T/datadir"

# --- data records nest within bounds.
python3 -c "print('{\"messages\": ' + '[' * 200 + ']' * 200 + '}')" > "$T/deep.jsonl"
expect_error data-record-deep "$T/deep.jsonl:1: JSON nested deeper than 128 levels" \
  "$FTRUN" data "$CFG" --set data_config.train_file="$T/deep.jsonl"

# --- make-tiny-model --vocab-size 1 (raw sentencepiece text) and 1e9 (silently 1023).
C=examples/tiny/tokenizer_corpus.txt
expect_error tiny-vocab-1 "--vocab-size must be a whole number from 4 to 1000000, got '1'" \
  "$FTRUN" make-tiny-model "$T/tiny" --corpus "$C" --vocab-size 1 --pretrain-steps 0
expect_error tiny-vocab-1e9 "--vocab-size must be a whole number from 4 to 1000000, got '1e9'" \
  "$FTRUN" make-tiny-model "$T/tiny" --corpus "$C" --vocab-size 1e9 --pretrain-steps 0
expect_error tiny-vocab-1000000000 "got '1000000000'" \
  "$FTRUN" make-tiny-model "$T/tiny" --corpus "$C" --vocab-size 1000000000 --pretrain-steps 0
# The corpus has 57 distinct characters (Python's count); with the 256 byte-fallback pieces and
# <unk>, <s>, </s> sentencepiece needs 57 + 256 + 3 = 316.
expect_error tiny-vocab-too-small "--vocab-size 8 is too small for $C: its characters and sentencepiece's own pieces need 316; pass --vocab-size 316 or more" \
  "$FTRUN" make-tiny-model "$T/tiny" --corpus "$C" --vocab-size 8 --pretrain-steps 0
absent tiny-vocab "$T/tiny"
out=$("$FTRUN" make-tiny-model "$T/tiny" --corpus "$C" --vocab-size 100000 --pretrain-steps 0 2>&1)
[[ "$out" == *"yields only"*"fewer than --vocab-size 100000"* ]] && passed=$((passed+1)) \
  || { fail "tiny-vocab-large: no note that the vocabulary is smaller"; echo "$out" | head -5; }
rm -rf "$T/tiny"

# --- merge: shard sizes, and an adapter into a base of another kind.
"$FTRUN" "$CFG" --set training_args.output_dir="$T/lora" --set training_args.max_steps=2 \
  --set training_args.save_steps=2 > "$T/train.log" 2>&1 || { cat "$T/train.log"; fail "training the adapter"; }
lora_before=$(hash_inputs "$T/lora")
expect_error eval-val-file-directory "$T/datadir: is a directory, expected a .json or .jsonl data file ($CFG: data_config.val_file)" \
  "$FTRUN" eval "$CFG" --checkpoint "$T/lora" --set data_config.val_file="$T/datadir" --output "$T/pred.jsonl"
absent eval-val-file-directory "$T/pred.jsonl"
expect_error max-shard-size-0 "--max-shard-size must be a positive number of bytes (e.g. 5000000000 or 5GB), got '0'" \
  "$FTRUN" merge "$T/lora" "$T/merged" --max-shard-size 0
expect_error max-shard-size-negative "--max-shard-size must be a positive number of bytes (e.g. 5000000000 or 5GB), got '-1'" \
  "$FTRUN" merge "$T/lora" "$T/merged" --max-shard-size -1
expect_error merge-llama-into-qwen2 "$T/lora/adapter_config.json: the adapter was trained on $M, model_type llama (LlamaForCausalLM), but the base model $Q is model_type qwen2 (Qwen2ForCausalLM)" \
  "$FTRUN" merge "$T/lora" "$T/merged" --base "$Q"
expect_error merge-llama-into-glm4 "but the base model $G is model_type chatglm (ChatGLMModel)" \
  "$FTRUN" merge "$T/lora" "$T/merged" --base "$G"
absent merge "$T/merged"
"$FTRUN" merge "$T/lora" "$T/merged" --max-shard-size 200KB > "$T/merge.log" 2>&1 \
  && [ -e "$T/merged/model.safetensors.index.json" ] && passed=$((passed+1)) \
  || { fail "merge --max-shard-size 200KB: no sharded model"; cat "$T/merge.log"; }
[ "$(hash_inputs "$T/lora")" = "$lora_before" ] && passed=$((passed+1)) || fail "merge changed the adapter"

# --- garbage, empty or incomplete trainer_state.json / layout.json (a checkpoint from before
# checksums, whose COMPLETE holds only the step, so the files themselves are read).
CK="$T/lora/checkpoint-2"
echo 2 > "$CK/COMPLETE"
cp "$CK/trainer_state.json" "$T/state.json"
cp "$CK/optimizer/layout.json" "$T/layout.json"
RESUME=("$FTRUN" "$CFG" --set training_args.output_dir="$T/lora" --set training_args.max_steps=4 --resume "$CK")
damaged() {  # name, file, expected text; the checkpoint is hashed around the resume
  local name=$1 file=$2 want=$3 h
  h=$(hash_inputs "$T/lora")
  expect_error "$name" "$file: $want" "${RESUME[@]}"
  [ "$(hash_inputs "$T/lora")" = "$h" ] && passed=$((passed+1)) || fail "$name: the output directory changed"
}
printf 'garbage\x01{' > "$CK/trainer_state.json"
damaged trainer-state-garbage "$CK/trainer_state.json" "invalid JSON: "
: > "$CK/trainer_state.json"
damaged trainer-state-empty "$CK/trainer_state.json" "invalid JSON: the file is empty (expected a JSON document)"
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); del j['position']; json.dump(j, open(sys.argv[2], 'w'))" \
  "$T/state.json" "$CK/trainer_state.json"
damaged trainer-state-missing-key "$CK/trainer_state.json" "missing key 'position'"
cp "$T/state.json" "$CK/trainer_state.json"
echo 'not json' > "$CK/optimizer/layout.json"
damaged layout-garbage "$CK/optimizer/layout.json" "invalid JSON: "
: > "$CK/optimizer/layout.json"
damaged layout-empty "$CK/optimizer/layout.json" "invalid JSON: the file is empty"
echo '{}' > "$CK/optimizer/layout.json"
damaged layout-missing-key "$CK/optimizer/layout.json" "key 'units' not found"
python3 -c "print('[' * 100000)" > "$CK/optimizer/layout.json"
damaged layout-deep "$CK/optimizer/layout.json:1" "JSON nested deeper than 64 levels"
cp "$T/layout.json" "$CK/optimizer/layout.json"

# --- bounded JSON: config.json nesting, DeepSpeed JSON of an unexpected shape.
cp -r "$M" "$T/deepcfg"
python3 -c "
import json, sys
j = json.load(open(sys.argv[1])); j['x'] = 0
s = json.dumps(j).replace('\"x\": 0', '\"x\": ' + '[' * 100 + ']' * 100)
open(sys.argv[1], 'w').write(s)" "$T/deepcfg/config.json"
expect_error config-json-deep "$T/deepcfg/config.json: JSON nested deeper than 64 levels" \
  "$FTRUN" generate "$T/deepcfg" --prompt hi
echo '{"zero_optimization": {"stage": 2, "offload_optimizer": "cpu"}}' > "$T/ds.json"
expect_error deepspeed-json-shape "$T/ds.json: zero_optimization: unexpected value: " \
  "$FTRUN" "$CFG" --set training_args.output_dir="$OUT" --set training_args.deepspeed="$T/ds.json"
rm -rf "$OUT"

[ "$(hash_repo_inputs)" = "$before" ] && passed=$((passed+1)) \
  || fail "the repository's example models, data or configs changed"
if [ $failures -ne 0 ]; then echo "e2e hostile inputs: $failures failed, $passed passed"; exit 1; fi
echo "e2e hostile inputs: $passed passed"
