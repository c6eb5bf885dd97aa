#!/usr/bin/env bash
# The three strategies through the CLI on the tiny model: P-Tuning v2 and full SFT (LoRA is
# demo_test.sh). Each run's loss must fall (stated bound: last logged < 0.8 x first) and its
# output must load in `ftrun generate`: a PEFT prefix adapter, and a plain HF model.
set -euo pipefail
FTRUN=$1
OUT=$(mktemp -d /tmp/ftrun_e2e_strat.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
check_loss() {
  python3 - "$1" <<'PY' || fail "loss did not fall in $1"
import json, sys
losses = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
print("losses", [round(x, 3) for x in losses])
assert len(losses) >= 2 and losses[-1] < 0.8 * losses[0], losses
PY
}

"$FTRUN" configs/tiny/ptuning_v2.yaml --set training_args.output_dir="$OUT/pt" > "$OUT/pt.log" 2>&1 \
  || { cat "$OUT/pt.log"; fail "ptuning run"; }
check_loss "$OUT/pt/metrics.jsonl"
python3 - "$OUT/pt/adapter_config.json" <<'PY' || fail "prefix adapter_config"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["peft_type"] == "PREFIX_TUNING" and j["num_virtual_tokens"] == 16, j
assert j["token_dim"] == 32 and j["num_attention_heads"] == 2 and j["num_layers"] == 2, j
PY
"$FTRUN" generate "$OUT/pt" --prompt "What is 2 plus 3?" --max-new-tokens 8 > /dev/null || fail "generate from prefix adapter"

"$FTRUN" configs/tiny/sft.yaml --set training_args.output_dir="$OUT/sft" > "$OUT/sft.log" 2>&1 \
  || { cat "$OUT/sft.log"; fail "sft run"; }
check_loss "$OUT/sft/metrics.jsonl"
for f in config.json model.safetensors tokenizer.model checkpoint-60/COMPLETE checkpoint-60/model.safetensors; do
  [ -f "$OUT/sft/$f" ] || fail "sft output lacks $f"
done
"$FTRUN" generate "$OUT/sft" --prompt "What is 2 plus 3?" --max-new-tokens 8 > /dev/null || fail "generate from full model"
echo "e2e strategies: 2 passed"
