#!/usr/bin/env bash
# The README's demo path: LoRA on the tiny model with configs/tiny/lora.yaml, then a greedy
# generation from the trained adapter. Asserts the loss falls clearly and the outputs are
# a loadable PEFT adapter.
set -euo pipefail
FTRUN=$1
OUT=$(mktemp -d /tmp/ftrun_e2e_demo.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$OUT/run" > "$OUT/train.log" 2>&1 \
  || { cat "$OUT/train.log"; fail "training exited non-zero"; }
for f in adapter_config.json adapter_model.safetensors metrics.jsonl tokenizer.model \
         checkpoint-60/COMPLETE checkpoint-60/adapter_model.safetensors; do
  [ -f "$OUT/run/$f" ] || fail "missing $f"
done
# first and last logged loss: the last must be well under the first (stated bound: 0.6x)
python3 - "$OUT/run/metrics.jsonl" <<'PY' || fail "loss did not fall"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
losses = [r["loss"] for r in recs if "loss" in r]
assert len(losses) == 6, losses
for r in recs:
    if "test_loss" in r:
        continue
    for k in ("step", "loss", "learning_rate", "grad_norm"):
        assert k in r, (k, r)
# test_file is set: after training, one test_loss record (HF's trainer.predict), last.
tests = [r for r in recs if "test_loss" in r]
assert len(tests) == 1 and recs[-1] is tests[0], tests
assert tests[0]["step"] == 60 and 0 < tests[0]["test_loss"] < losses[0], (tests, losses)
print("losses", losses, "test_loss", tests[0]["test_loss"])
assert losses[-1] < 0.6 * losses[0], losses
PY
cfg_base=$(python3 -c "import json;print(json.load(open('$OUT/run/adapter_config.json'))['base_model_name_or_path'])")
[ "$cfg_base" = "examples/tiny/model" ] || fail "base_model_name_or_path is '$cfg_base'"

answer=$("$FTRUN" generate "$OUT/run" --prompt "What is 2 plus 3?" --max-new-tokens 24) \
  || fail "generate exited non-zero"
echo "generated: $answer"
[ -n "$answer" ] || fail "empty generation"
# Continue training from the trained adapter directory (adapter_name_or_path): the first step
# must already be far below a fresh adapter's first step.
"$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$OUT/more" --set training_args.max_steps=2 \
  --set training_args.logging_steps=1 --set adapter_name_or_path="$OUT/run" > "$OUT/more.log" 2>&1 \
  || { cat "$OUT/more.log"; fail "continuing from an adapter"; }
python3 - "$OUT/run/metrics.jsonl" "$OUT/more/metrics.jsonl" <<'PY' || fail "continued training did not start from the adapter"
import json, sys
fresh_first = [json.loads(l) for l in open(sys.argv[1])][0]["loss"]
cont_first = [json.loads(l) for l in open(sys.argv[2])][0]["loss"]
print("fresh first window", fresh_first, "continued first step", cont_first)
assert cont_first < 0.7 * fresh_first, (fresh_first, cont_first)
PY
echo "e2e demo: 2 passed"
