#!/usr/bin/env bash
# TensorBoard event files read back by TensorBoard's own reader (EventAccumulator, from the
# venv build/pyref that .ci/install-pyref makes):
#  1. a LoRA run with evaluation by generation, killed while writing checkpoint-20
#     (FTRUN_TEST_KILL_IN_SAVE) after logging steps 1-20, then `--resume yes` from checkpoint-10:
#     the run directory (HF's default, output_dir/runs/<date>_<host>, found again on resume)
#     holds every step 1-20 of every tag exactly once, with exactly the values of the records
#     logged (steps 1-10 from the first run, 11-20 and the test record from the resumed one):
#     train/*, eval/loss, eval/rouge-*, eval/bleu-4, test/*; as float32, which is what
#     TensorBoard stores;
#  2. report_to: none writes no runs/; logging_dir puts the files where it says.
set -euo pipefail
FTRUN=$1
PY=$(dirname "$FTRUN")/pyref/bin/python
T=$(mktemp -d /tmp/ftrun_e2e_tensorboard.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$PY" ] || fail "TensorBoard's reader is not installed (no $PY): run \`bash .ci/install-pyref\` from the repository root (README: Tests)"
"$PY" -c "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator" \
  || fail "tensorboard does not import in $PY: run \`bash .ci/install-pyref\`"

common=(--set training_args.max_steps=20 --set training_args.save_steps=10 --set training_args.logging_steps=1
        --set training_args.eval_strategy=steps --set training_args.eval_steps=5
        --set training_args.predict_with_generate=true --set training_args.generation_config.max_new_tokens=4
        --set training_args.output_dir="$T/run")
set +e
FTRUN_TEST_KILL_IN_SAVE=20 "$FTRUN" configs/tiny/lora.yaml "${common[@]}" > "$T/first.log" 2>&1
rc=$?
set -e
[ $rc -eq 137 ] || { cat "$T/first.log"; fail "expected the first run to die by SIGKILL (137), got $rc"; }
cp "$T/run/metrics.jsonl" "$T/first.jsonl"   # the resumed run keeps its records up to step 10
"$FTRUN" configs/tiny/lora.yaml "${common[@]}" --resume yes > "$T/resumed.log" 2>&1 \
  || { cat "$T/resumed.log"; fail "resume"; }
grep -q "resumed from .*checkpoint-10" "$T/resumed.log" || { cat "$T/resumed.log"; fail "did not resume from checkpoint-10"; }

"$PY" - "$T/run" "$T/first.jsonl" "$T/run/metrics.jsonl" <<'PY' || fail "TensorBoard's reader disagrees with metrics.jsonl"
import glob, json, os, struct, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

out, first, resumed = sys.argv[1:]
runs = glob.glob(os.path.join(out, "runs", "*"))
assert len(runs) == 1, ("one run directory, found again on resume", runs)
files = sorted(glob.glob(os.path.join(runs[0], "events.out.tfevents.*")))
assert len(files) == 2, files

def tag(key):  # HF's rewrite_logs
    for p in ("eval_", "test_"):
        if key.startswith(p):
            return p[:-1] + "/" + key[len(p):]
    return "train/" + key

def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]

records = [json.loads(l) for l in open(first) if l.strip()]
records = [r for r in records if r["step"] <= 10]
records += [r for r in map(json.loads, filter(str.strip, open(resumed))) if r["step"] > 10]
want = {}
for r in records:
    for k, v in r.items():
        if k == "step" or not isinstance(v, (int, float)):
            continue
        series = want.setdefault(tag(k), {})
        if r["step"] in series:
            assert k == "epoch" and series[r["step"]] == f32(v), (k, r)  # an eval record repeats the epoch
        series[r["step"]] = f32(v)

ea = EventAccumulator(runs[0], size_guidance={"scalars": 0})
ea.Reload()
tags = sorted(ea.Tags()["scalars"])
assert tags == sorted(want), (tags, sorted(want))
for t in tags:
    got = [(e.step, e.value) for e in ea.Scalars(t)]
    assert got == sorted(want[t].items()), (t, got, sorted(want[t].items()))
steps = [e.step for e in ea.Scalars("train/loss")]
assert steps == list(range(1, 21)), steps
assert [e.step for e in ea.Scalars("eval/loss")] == [5, 10, 15, 20]
assert "eval/rouge-1" in tags and "eval/bleu-4" in tags and "test/loss" in tags and "test/rouge-l" in tags, tags
# The file the killed run wrote keeps steps 1-10 only; the resumed run's file has 11-20.
first_file = EventAccumulator(files[0]); first_file.Reload()
assert max(e.step for e in first_file.Scalars("train/loss")) == 10
print("tensorboard: %d tags, train/loss steps 1-20 once each, values as metrics.jsonl" % len(tags))
PY

# report_to: none -> no event files; logging_dir -> there.
"$FTRUN" configs/tiny/lora.yaml --set training_args.max_steps=2 --set training_args.report_to=none \
  --set training_args.output_dir="$T/none" > "$T/none.log" 2>&1 || { cat "$T/none.log"; fail "report_to: none"; }
[ ! -e "$T/none/runs" ] || fail "report_to: none wrote $T/none/runs"
"$FTRUN" configs/tiny/lora.yaml --set training_args.max_steps=2 --set training_args.logging_steps=1 \
  --set training_args.logging_dir="$T/tb" --set training_args.output_dir="$T/dir" > "$T/dir.log" 2>&1 \
  || { cat "$T/dir.log"; fail "logging_dir"; }
[ ! -e "$T/dir/runs" ] || fail "logging_dir given, but $T/dir/runs was written"
"$PY" - "$T/tb" <<'PY' || fail "logging_dir"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1]); ea.Reload()
assert [e.step for e in ea.Scalars("train/loss")] == [1, 2]
PY
echo "e2e tensorboard: 2 passed"
