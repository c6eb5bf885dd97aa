#!/usr/bin/env bash
# Evaluation by generation through the CLI on the tiny model:
#  1. a short LoRA run with eval_strategy steps + predict_with_generate + test_file: every eval
#     record in metrics.jsonl has eval_loss and eval_rouge-1/2/l (0..100) and eval_bleu-4 (0..1);
#     the run ends with a test_ record and predictions.jsonl, one {prompt, reference,
#     prediction} line per test row;
#  2. `ftrun eval --split test` on the result gives the same metrics and predictions;
#  3. the same run under `mpirun -np 2` at ZeRO-3 (rows split across ranks, synced decoding)
#     and `mpirun -np 2 ftrun eval` at ZeRO-3 (weights sharded) give the same predictions as
#     one process;
#  4. bad input: unknown --split, a missing split file, no trained output.
set -euo pipefail
FTRUN=$1
MPIRUN=${MPIRUN:-mpirun}
T=$(mktemp -d /tmp/ftrun_e2e_eval.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--set training_args.max_steps=20 --set training_args.logging_steps=10 --set training_args.eval_strategy=steps
        --set training_args.eval_steps=10 --set training_args.predict_with_generate=true
        --set training_args.generation_config.max_new_tokens=32 --set training_args.save_strategy=no)

"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.output_dir="$T/one" > "$T/one.log" 2>&1 \
  || { cat "$T/one.log"; fail "training with evaluation"; }
rows=$(grep -c . examples/tiny/dev.jsonl)
python3 - "$T/one" "$rows" <<'PY' || fail "eval metrics / predictions"
import json, os, sys
d, rows = sys.argv[1], int(sys.argv[2])
recs = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]
evals = [r for r in recs if "eval_loss" in r]
assert [r["step"] for r in evals] == [10, 20], evals
for r in evals:
    for k in ("eval_rouge-1", "eval_rouge-2", "eval_rouge-l"):
        assert 0 <= r[k] <= 100, (k, r)
    assert 0 <= r["eval_bleu-4"] <= 1, r
    assert r["eval_loss"] > 0, r
# After 20 steps the replies share words with the references.
assert evals[-1]["eval_rouge-1"] > 5, evals
test = [r for r in recs if "test_loss" in r]
assert len(test) == 1 and all(k in test[0] for k in ("test_rouge-1", "test_rouge-2", "test_rouge-l", "test_bleu-4")), test
preds = [json.loads(l) for l in open(os.path.join(d, "predictions.jsonl"))]
assert len(preds) == rows, (len(preds), rows)
assert all(list(p) == ["prompt", "reference", "prediction"] for p in preds), preds[0]
assert sum(1 for p in preds if p["prediction"]) >= rows // 2, "most predictions are empty"
print("eval:", {k: round(v, 4) for k, v in evals[-1].items() if k.startswith("eval_")})
print("test:", {k: round(v, 4) for k, v in test[0].items() if k.startswith("test_")})
PY

# ftrun eval on the final adapter: the same numbers and predictions as the end of training.
"$FTRUN" eval configs/tiny/lora.yaml --split test --set training_args.output_dir="$T/one" \
  --set training_args.generation_config.max_new_tokens=32 --output "$T/eval_test.jsonl" > "$T/eval.json" 2> "$T/eval.log" \
  || { cat "$T/eval.log"; fail "ftrun eval"; }
cmp -s "$T/eval_test.jsonl" "$T/one/predictions.jsonl" || fail "ftrun eval predicts differently from the training run"
python3 - "$T/eval.json" "$T/one/metrics.jsonl" <<'PY' || fail "ftrun eval metrics differ from the training run's test metrics"
import json, sys
got = json.loads(open(sys.argv[1]).read())
test = [json.loads(l) for l in open(sys.argv[2]) if "test_loss" in l][0]
for k in ("test_loss", "test_rouge-1", "test_rouge-2", "test_rouge-l", "test_bleu-4"):
    assert abs(got[k] - test[k]) <= 1e-6 * max(1.0, abs(test[k])), (k, got[k], test[k])
assert got["test_samples"] == 30, got
saved = json.load(open(sys.argv[2].replace("metrics.jsonl", "test_results.json")))
assert saved == got, (saved, got)
PY

# The run's precision is the config's: a LoRA run on bf16-held weights under bf16 autocast,
# evaluated by `ftrun eval` with the same config, gives the training run's test loss exactly
# (the base is loaded in bf16 and the loss computed under autocast, as in training).
"$FTRUN" configs/tiny/lora.yaml --set training_args.max_steps=10 --set torch_dtype=bfloat16 \
  --set training_args.bf16=true --set training_args.output_dir="$T/bf16" > "$T/bf16.log" 2>&1 \
  || { cat "$T/bf16.log"; fail "bf16 training"; }
"$FTRUN" eval configs/tiny/lora.yaml --split test --set training_args.output_dir="$T/bf16" --set torch_dtype=bfloat16 \
  --set training_args.bf16=true --output "$T/bf16_test.jsonl" > "$T/bf16_eval.json" 2> "$T/bf16_eval.log" \
  || { cat "$T/bf16_eval.log"; fail "ftrun eval in bf16"; }
grep -q "evaluating with base weights bfloat16 under bf16 autocast" "$T/bf16_eval.log" || { cat "$T/bf16_eval.log"; fail "eval precision line"; }
python3 - "$T/bf16_eval.json" "$T/bf16/metrics.jsonl" <<'PY' || fail "bf16 ftrun eval loss differs from the training run's"
import json, sys
got = json.loads(open(sys.argv[1]).read())
test = [json.loads(l) for l in open(sys.argv[2]) if "test_loss" in l][0]
assert abs(got["test_loss"] - test["test_loss"]) <= 1e-6 * abs(test["test_loss"]), (got["test_loss"], test["test_loss"])
PY

# Two ranks under mpirun: ZeRO-3 training (every forward collective) and plain eval.
timeout 240 "$MPIRUN" -np 2 --allow-run-as-root --oversubscribe --bind-to none \
  "$FTRUN" configs/tiny/lora.yaml "${common[@]}" --set training_args.per_device_train_batch_size=4 \
  --set zero_stage=3 --set training_args.output_dir="$T/two" > "$T/two.log" 2>&1 \
  || { cat "$T/two.log"; fail "2-rank ZeRO-3 training with evaluation"; }
grep -q "2 rank(s), ZeRO stage 3" "$T/two.log" || { cat "$T/two.log"; fail "not 2 ranks at stage 3"; }
cmp -s "$T/two/predictions.jsonl" "$T/one/predictions.jsonl" || fail "2-rank ZeRO-3 predictions differ from 1 rank"
python3 - "$T/one/metrics.jsonl" "$T/two/metrics.jsonl" <<'PY' || fail "2-rank eval metrics differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if "eval_loss" in l or "test_loss" in l]
b = [json.loads(l) for l in open(sys.argv[2]) if "eval_loss" in l or "test_loss" in l]
assert len(a) == len(b) == 3, (a, b)
for x, y in zip(a, b):
    for k in x:
        if k.startswith(("eval_r", "eval_b", "test_r", "test_b")):
            assert abs(x[k] - y[k]) <= 1e-6, (k, x[k], y[k])
        if k.endswith("_loss"):  # split across the ranks; weights equal to training's 1e-5
            assert abs(x[k] - y[k]) <= 1e-4 * abs(x[k]), (k, x[k], y[k])
PY
# --split val: HF's eval_ keys and eval_results.json; the same numbers as the last evaluation.
"$FTRUN" eval configs/tiny/lora.yaml --split val --set training_args.output_dir="$T/one" \
  --set training_args.generation_config.max_new_tokens=32 --output "$T/eval_val.jsonl" > "$T/evalv.json" 2> "$T/evalv.log" \
  || { cat "$T/evalv.log"; fail "ftrun eval --split val"; }
python3 - "$T/evalv.json" "$T/one/metrics.jsonl" "$T/one/eval_results.json" <<'PY' || fail "ftrun eval --split val differs from the last evaluation"
import json, sys
got = json.loads(open(sys.argv[1]).read())
last = [json.loads(l) for l in open(sys.argv[2]) if "eval_loss" in l][-1]
for k in ("eval_loss", "eval_rouge-1", "eval_rouge-2", "eval_rouge-l", "eval_bleu-4"):
    assert abs(got[k] - last[k]) <= 1e-6 * max(1.0, abs(last[k])), (k, got[k], last[k])
assert json.load(open(sys.argv[3])) == got
PY

# ... and `ftrun eval` on 2 ranks at ZeRO-3: the weights sharded (each rank about half), the
# same predictions.
timeout 240 "$MPIRUN" -np 2 --allow-run-as-root --oversubscribe --bind-to none \
  "$FTRUN" eval configs/tiny/lora.yaml --split test --set training_args.output_dir="$T/one" --set zero_stage=3 \
  --set training_args.generation_config.max_new_tokens=32 --output "$T/eval2.jsonl" > "$T/eval2.json" 2> "$T/eval2.log" \
  || { cat "$T/eval2.log"; fail "2-rank ftrun eval"; }
grep -q "on 2 rank(s)" "$T/eval2.log" || { cat "$T/eval2.log"; fail "ftrun eval did not run on 2 ranks"; }
read -r kept full < <(sed -n 's/.*ZeRO-3 evaluation: rank 0 keeps \([0-9]*\) of \([0-9]*\) bytes.*/\1 \2/p' "$T/eval2.log")
[ -n "$kept" ] && [ "$kept" -lt $((full * 6 / 10)) ] || { cat "$T/eval2.log"; fail "ftrun eval at ZeRO-3 did not shard the weights"; }
cmp -s "$T/eval2.jsonl" "$T/one/predictions.jsonl" || fail "2-rank ftrun eval predicts differently"
[ "$(grep -c . "$T/eval2.json")" = 1 ] || fail "2-rank ftrun eval printed the metrics more than once"

# Bad input: clear errors naming what is wrong.
expect_error() {  # expect_error EXIT_CODE TEXT -- ARGS...
  local code=$1 text=$2; shift 3
  set +e; "$FTRUN" "$@" > "$T/err.log" 2>&1; local rc=$?; set -e
  [ "$rc" = "$code" ] || { cat "$T/err.log"; fail "ftrun $* exited $rc, expected $code"; }
  grep -qF -- "$text" "$T/err.log" || { cat "$T/err.log"; fail "ftrun $*: no '$text' in the error"; }
}
expect_error 2 "--split must be val or test" -- eval configs/tiny/lora.yaml --split train
expect_error 1 "data_config.val_file: examples/tiny/nope.jsonl: evaluation data file not found" -- \
  eval configs/tiny/lora.yaml --set training_args.output_dir="$T/one" --set data_config.val_file=nope.jsonl
expect_error 1 "no trained model here" -- eval configs/tiny/lora.yaml --set training_args.output_dir="$T/none"
expect_error 1 "data_config.test_file is not set" -- eval configs/tiny/lora.yaml --split test \
  --set training_args.output_dir="$T/one" --set data_config.test_file=null
expect_error 1 "examples/tiny/nope.jsonl" -- configs/tiny/lora.yaml "${common[@]}" \
  --set training_args.output_dir="$T/bad" --set data_config.val_file=nope.jsonl
echo "e2e eval: passed"
