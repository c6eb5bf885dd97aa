#!/usr/bin/env bash
# Issue 16's "check before allocating" and "numeric health" examples through the CLI, exactly
# as the issue gives them: generate with a 20,000-word prompt, --temperature nan (and the
# other sampling options), config.json hidden_size 10^9 / vocab_size 10^12, NaN weights, a
# special-token id beyond the vocabulary. Each must exit non-zero with a one-line error that
# says what and where, with no libtorch stack frames, and leave the model files unchanged.
set -uo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_checks.XXXXXX)
trap 'rm -rf "$T"' EXIT
failures=0
passed=0
expect_error() {  # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then echo "FAIL $name: exited 0"; failures=$((failures+1)); return; fi
  if [[ "$out" != *"$want"* ]]; then
    echo "FAIL $name: output lacks '$want':"; echo "$out" | head -20; failures=$((failures+1)); return
  fi
  if [[ "$out" == *"frame #"* ]]; then
    echo "FAIL $name: stack frames in the output:"; echo "$out" | head -20; failures=$((failures+1)); return
  fi
  # The error itself is one line: the line holding the expected text starts with "ftrun:".
  if ! grep -F -- "$want" <<< "$out" | grep -q '^ftrun: '; then
    echo "FAIL $name: the error is not one 'ftrun: ...' line:"; echo "$out" | head -20
    failures=$((failures+1)); return
  fi
  echo "ok   $name"; passed=$((passed+1))
}
# A copy of a tiny model with one config.json key set (python only edits JSON here).
model_with() {  # src, dst, key, json value
  cp -r "$1" "$2"
  python3 - "$2/config.json" "$3" "$4" <<'EOF'
import json, sys
p, key, value = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
j = json.load(open(p)); j[key] = value
json.dump(j, open(p, "w"), indent=2)
EOF
}
M=examples/tiny/model            # llama, 405 tokens, 512 positions
G=examples/tiny/glm4-model       # chatglm key set
OUT="$T/out"

# --- generate / chat: prompts longer than the context are refused, before the weights load.
python3 -c "print(' '.join(['word'] * 20000))" > "$T/prompt.txt"
expect_error generate-20000-words "longer than the model's context of 512 tokens (max_position_embeddings in" \
  "$FTRUN" generate "$M" --prompt "$(cat "$T/prompt.txt")"
expect_error generate-20000-words-glm "longer than the model's context of 512 tokens (seq_length in" \
  "$FTRUN" generate "$G" --prompt "$(cat "$T/prompt.txt")"

# --- sampling options.
expect_error temperature-nan "--temperature must be > 0" "$FTRUN" generate "$M" --prompt hi --temperature nan
expect_error temperature-negative "--temperature must be > 0" "$FTRUN" generate "$M" --prompt hi --temperature -1
expect_error temperature-inf "--temperature must be > 0" "$FTRUN" generate "$M" --prompt hi --temperature inf
expect_error top-p-zero "--top-p must be in (0, 1]" "$FTRUN" generate "$M" --prompt hi --top-p 0
expect_error top-p-above-one "--top-p must be in (0, 1]" "$FTRUN" generate "$M" --prompt hi --top-p 1.5
expect_error top-p-nan "--top-p must be in (0, 1]" "$FTRUN" generate "$M" --prompt hi --top-p nan
expect_error top-k-negative "--top-k must be >= 0" "$FTRUN" generate "$M" --prompt hi --top-k -3
expect_error repetition-penalty-zero "--repetition-penalty must be > 0" "$FTRUN" generate "$M" --prompt hi \
  --repetition-penalty 0
expect_error repetition-penalty-nan "--repetition-penalty must be > 0" "$FTRUN" generate "$M" --prompt hi \
  --repetition-penalty nan
expect_error max-new-tokens-zero "--max-new-tokens must be >= 1" "$FTRUN" generate "$M" --prompt hi --max-new-tokens 0
expect_error chat-temperature-nan "--temperature must be > 0" "$FTRUN" chat "$M" --temperature nan < /dev/null

# --- config.json against the weights, before anything is allocated.
model_with "$M" "$T/hidden" hidden_size 1000000000
expect_error hidden-size-1e9-generate "config.json's hidden_size 1000000000" "$FTRUN" generate "$T/hidden" --prompt hi
expect_error hidden-size-1e9-train "config.json's hidden_size 1000000000" "$FTRUN" configs/tiny/lora.yaml \
  --model-dir "$T/hidden" --set training_args.output_dir="$OUT" --set training_args.max_steps=1
model_with "$M" "$T/vocab" vocab_size 1000000000000
expect_error vocab-size-1e12-train "config.json's vocab_size 1000000000000" "$FTRUN" configs/tiny/lora.yaml \
  --model-dir "$T/vocab" --set training_args.output_dir="$OUT" --set training_args.max_steps=1
expect_error vocab-size-1e12-generate "model.embed_tokens.weight' has shape [405, 64]" "$FTRUN" generate "$T/vocab" \
  --prompt hi
model_with "$G" "$T/glm-vocab" padded_vocab_size 1000000000000
expect_error padded-vocab-size-1e12 "config.json's padded_vocab_size 1000000000000" "$FTRUN" generate "$T/glm-vocab" \
  --prompt hi

# --- NaN weights: an error naming the tensor and the file, in training and in generate.
cp -r "$M" "$T/nan"
python3 - "$T/nan/model.safetensors" <<'EOF'
import json, struct, sys
# One float32 NaN written into model.layers.0.mlp.up_proj.weight's data, in place.
p = sys.argv[1]
with open(p, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    t = h["model.layers.0.mlp.up_proj.weight"]
    assert t["dtype"] == "F32"
    f.seek(8 + n + t["data_offsets"][0] + 4 * 5)
    f.write(struct.pack("<I", 0x7fc00000))
EOF
sum_before=$(sha256sum "$T/nan/model.safetensors")
expect_error nan-weights-train "$T/nan/model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' holds NaN" \
  "$FTRUN" configs/tiny/lora.yaml --model-dir "$T/nan" --set training_args.output_dir="$OUT" \
  --set training_args.max_steps=1
expect_error nan-weights-generate "tensor 'model.layers.0.mlp.up_proj.weight' holds NaN" "$FTRUN" generate "$T/nan" \
  --prompt hi
[ "$(sha256sum "$T/nan/model.safetensors")" = "$sum_before" ] || { echo "FAIL nan-weights: the model changed"; failures=$((failures+1)); }

# --- a special-token id beyond the vocabulary (405 rows): <|eot_id|> moved from 404 to 4040.
cp -r "$M" "$T/special"
python3 - "$T/special/tokenizer_config.json" <<'EOF'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
j["added_tokens_decoder"]["4040"] = j["added_tokens_decoder"].pop("404")
json.dump(j, open(p, "w"), indent=2)
EOF
expect_error special-id-train "special token '<|eot_id|>' has id 4040, beyond the model's vocabulary of 405" \
  "$FTRUN" configs/tiny/lora.yaml --model-dir "$T/special" --set training_args.output_dir="$OUT" \
  --set training_args.max_steps=1
expect_error special-id-generate "special token '<|eot_id|>' has id 4040" "$FTRUN" generate "$T/special" --prompt hi
model_with "$M" "$T/eos" eos_token_id 999
expect_error config-eos-beyond-vocab "eos_token_id is 999, beyond the model's vocabulary of 405" \
  "$FTRUN" generate "$T/eos" --prompt hi
[ ! -e "$OUT/adapter_model.safetensors" ] || { echo "FAIL: a failed run wrote an adapter"; failures=$((failures+1)); }

if [ $failures -ne 0 ]; then echo "e2e input checks: $failures failed, $passed passed"; exit 1; fi
echo "e2e input checks: $passed passed"
