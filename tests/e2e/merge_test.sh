#!/usr/bin/env bash
# `ftrun merge` and generation options through the CLI on the tiny model: a short LoRA run,
# merged into a sharded HF model (index, __metadata__ format pt, tokenizer copied) that
# generates the same greedy answer as base + adapter, with and without the KV cache; top-k 1
# sampling equals greedy; the independent reference loads it as transformers would and gets
# base + adapter's logits; a prefix adapter is refused with a clear error.
set -euo pipefail
FTRUN=$1
OUT=$(mktemp -d /tmp/ftrun_e2e_merge.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$OUT/lora" --set training_args.max_steps=10 \
  --set training_args.save_steps=10 > "$OUT/lora.log" 2>&1 || { cat "$OUT/lora.log"; fail "lora run"; }
# A small shard limit so the tiny model is split and indexed.
"$FTRUN" merge "$OUT/lora" "$OUT/merged" --max-shard-size 200000 > "$OUT/merge.log" 2>&1 \
  || { cat "$OUT/merge.log"; fail "merge"; }
for f in config.json model.safetensors.index.json tokenizer.model tokenizer_config.json; do
  [ -f "$OUT/merged/$f" ] || fail "merged output lacks $f"
done
python3 - "$OUT/merged" <<'PY' || fail "merged safetensors layout"
import json, os, struct, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
shards = sorted(set(idx["weight_map"].values()))
assert len(shards) >= 2, shards
for s in shards:
    with open(os.path.join(d, s), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    assert head["__metadata__"]["format"] == "pt", head["__metadata__"]
    assert not any("lora" in k for k in head if k != "__metadata__"), "adapter tensors in the merged model"
PY

# Loaded the way transformers' from_pretrained loads it (config.json + the index's shards, no
# missing or unexpected weights) by the independent reference, the merged model's logits equal
# base + adapter's (PEFT's formulas there too); without the adapter they differ.
ref() { python3 tests/reference/llama_ref.py logits --other "$OUT/merged" --ids 1,17,42,99,150,7,3,260 "$@"; }
base=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_model_name_or_path"])' "$OUT/lora/adapter_config.json")
with=$(ref --model "$base" --adapter "$OUT/lora") || fail "reference could not load the merged model"
without=$(ref --model "$base") || fail "reference run without the adapter"
echo "reference logits vs merged: with adapter $with; without $without"
python3 - "$with" "$without" <<'PY' || fail "merged logits differ from base + adapter in the reference"
import json, sys
w, wo = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert w["max_abs_diff"] <= 1e-5, w  # the issue: within 1e-5 in fp32
assert wo["max_abs_diff"] > 1e-3, ("the adapter changes nothing; the check would prove nothing", wo)
PY

ask() { "$FTRUN" generate "$@" --prompt "What is 2 plus 3?" --max-new-tokens 16 2>/dev/null; }
a=$(ask "$OUT/lora") || fail "generate from adapter"
b=$(ask "$OUT/merged") || fail "generate from merged model"
c=$(ask "$OUT/merged" --no-cache) || fail "generate without cache"
d=$(ask "$OUT/lora" --top-k 1 --temperature 0.5 --seed 7) || fail "generate with top-k 1"
echo "adapter: $a"; echo "merged: $b"
[ "$a" == "$b" ] || fail "merged model answers differently from base + adapter"
[ "$b" == "$c" ] || fail "KV cache changes the greedy answer"
[ "$a" == "$d" ] || fail "top-k 1 sampling differs from greedy"
ask "$OUT/lora" --repetition-penalty 1.3 --top-p 0.9 --seed 1 > /dev/null || fail "sampling options"
"$FTRUN" generate "$OUT/lora" --prompt hi --max-new-tokens 4 2>&1 >/dev/null | grep -q "tokens/s" \
  || fail "generate reports no speed"

"$FTRUN" configs/tiny/ptuning_v2.yaml --set training_args.output_dir="$OUT/pt" --set training_args.max_steps=2 \
  --set training_args.save_steps=2 > "$OUT/pt.log" 2>&1 || { cat "$OUT/pt.log"; fail "ptuning run"; }
if "$FTRUN" merge "$OUT/pt" "$OUT/pt-merged" > "$OUT/ptm.log" 2>&1; then fail "a prefix adapter was merged"; fi
grep -q "only LoRA adapters can be merged" "$OUT/ptm.log" || { cat "$OUT/ptm.log"; fail "unclear prefix refusal"; }
[ ! -e "$OUT/pt-merged" ] || fail "a refused merge left an output directory"
echo "e2e merge: passed"
