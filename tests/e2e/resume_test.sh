#!/usr/bin/env bash
# Exact resume and crash safety, for each strategy (LoRA, P-Tuning v2, full SFT):
#  A: 20 steps straight.
#  B: the same run, SIGKILLed while writing checkpoint-20 (FTRUN_TEST_KILL_IN_SAVE), so
#     checkpoint-10 must stay the newest COMPLETE one; then `--resume yes` continues from it.
# B's steps 11-20 must log exactly A's losses, and B's final weights must equal A's bit for
# bit. The resumed output must load in `ftrun generate`. Bad --resume values must fail clearly.
# The bf16 cases hold the same in bf16: LoRA on bf16-held weights (torch_dtype: bfloat16),
# P-Tuning v2 and full SFT under bf16 autocast (training_args.bf16), and full SFT in
# DeepSpeed's bf16 mode (torch_dtype: bfloat16: bf16 weights, fp32 masters in the
# checkpoint's optimizer files), at ZeRO stage 0 and 3; its model is written in bf16.
# Issue 18: LoRA with LoRA+ and NEFTune on (ZeRO-3), and P-Tuning v2 with NEFTune, resume
# exactly too (NEFTune's noise is keyed by seed, step, micro-batch and rank, not by a stream
# that a restart would lose); the LoRA+ adapter's adapter_config.json has no LoRA+ key.
# DoRA (peft_config.use_dora) resumes exactly at 1 rank, at ZeRO-3 with lora_dropout (the
# recompute replays its masks) and on a bf16-held base; use_dora is a resume key.
set -euo pipefail
FTRUN=$1
T=$(mktemp -d /tmp/ftrun_e2e_resume.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--set training_args.max_steps=20 --set training_args.save_steps=10 --set training_args.logging_steps=1)
passed=0
for case in lora ptuning_v2 sft lora:torch_dtype=bfloat16 ptuning_v2:training_args.bf16=true sft:training_args.bf16=true \
            sft:torch_dtype=bfloat16 sft:torch_dtype=bfloat16:zero_stage=3 \
            lora:peft_config.loraplus_lr_ratio=8:training_args.neftune_noise_alpha=5:zero_stage=3 \
            ptuning_v2:training_args.neftune_noise_alpha=5 \
            lora:peft_config.use_dora=true lora:peft_config.use_dora=true:peft_config.lora_dropout=0.1:zero_stage=3 \
            lora:peft_config.use_dora=true:torch_dtype=bfloat16; do
  strategy=${case%%:*}
  cfg=configs/tiny/$strategy.yaml
  extra=()
  if [[ "$case" == *:* ]]; then
    IFS=: read -r -a sets <<< "${case#*:}"
    for s in "${sets[@]}"; do extra+=(--set "$s"); done
    strategy="$strategy-bf16-$passed"
  fi
  run() { "$FTRUN" "$cfg" "${common[@]}" "${extra[@]}" "$@"; }
  run --set training_args.output_dir="$T/$strategy-a" > "$T/a.log" 2>&1 \
    || { cat "$T/a.log"; fail "$strategy: straight run"; }
  set +e
  FTRUN_TEST_KILL_IN_SAVE=20 run --set training_args.output_dir="$T/$strategy-b" > "$T/b.log" 2>&1
  rc=$?
  set -e
  [ $rc -eq 137 ] || { cat "$T/b.log"; fail "$strategy: expected the run to die by SIGKILL (137), got $rc"; }
  [ -f "$T/$strategy-b/checkpoint-10/COMPLETE" ] || fail "$strategy: checkpoint-10 missing"
  [ ! -e "$T/$strategy-b/checkpoint-20" ] || fail "$strategy: a half-written checkpoint-20 looks like a checkpoint"
  run --set training_args.output_dir="$T/$strategy-b" --resume yes > "$T/b2.log" 2>&1 \
    || { cat "$T/b2.log"; fail "$strategy: resume"; }
  grep -q "resumed from .*checkpoint-10" "$T/b2.log" || { cat "$T/b2.log"; fail "$strategy: did not resume from checkpoint-10"; }
  python3 - "$T/$strategy-a" "$T/$strategy-b" "$case" <<'PY' || fail "$strategy: resumed run differs"
import json, sys, os
a_dir, b_dir = sys.argv[1], sys.argv[2]
def losses(d):
    return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(d, "metrics.jsonl"))) if "loss" in r}
a, b = losses(a_dir), losses(b_dir)
for step in range(11, 21):
    assert a[step] == b[step], (step, a[step], b[step])
files = [f for f in os.listdir(a_dir) if f.endswith(".safetensors")]
assert files, os.listdir(a_dir)
for f in files:
    assert open(os.path.join(a_dir, f), "rb").read() == open(os.path.join(b_dir, f), "rb").read(), f
print("identical:", files)
if "use_dora=true" in sys.argv[3]:
    # A DoRA adapter: PEFT's config key and one magnitude vector per target, trained.
    cfg = json.load(open(os.path.join(b_dir, "adapter_config.json")))
    assert cfg["use_dora"] is True, cfg
    raw = open(os.path.join(b_dir, "adapter_model.safetensors"), "rb").read()
    keys = [k for k in json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")]) if k.endswith(".lora_magnitude_vector")]
    assert len(keys) == 14, keys
if "loraplus" in sys.argv[3]:
    cfg = json.load(open(os.path.join(b_dir, "adapter_config.json")))
    assert "loraplus_lr_ratio" not in cfg, cfg
if "torch_dtype=bfloat16" in sys.argv[3] and "sft" in sys.argv[3]:
    # Written as HF writes a bf16 model: BF16 tensors, config.json torch_dtype bfloat16.
    for f in files:
        raw = open(os.path.join(b_dir, f), "rb").read()
        n = int.from_bytes(raw[:8], "little")
        dtypes = {v["dtype"] for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
        assert dtypes == {"BF16"}, (f, dtypes)
    assert json.load(open(os.path.join(b_dir, "config.json")))["torch_dtype"] == "bfloat16"
    masters = [f for f in os.listdir(os.path.join(b_dir, "checkpoint-10", "optimizer")) if f.endswith(".safetensors")]
    raw = open(os.path.join(b_dir, "checkpoint-10", "optimizer", masters[0]), "rb").read()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert any(k.endswith(".master") and v["dtype"] == "F32" for k, v in header.items() if k != "__metadata__"), header.keys()
PY
  "$FTRUN" generate "$T/$strategy-b" --prompt "What is 2 plus 3?" --max-new-tokens 4 > /dev/null \
    || fail "$strategy: generate from the resumed output"
  passed=$((passed+1))
done

# Bad resume points name what exists.
out=$("$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$T/lora-b" --resume 15 2>&1) && fail "--resume 15 succeeded"
[[ "$out" == *"checkpoint-15 does not exist"*"checkpoint-10"* ]] || { echo "$out"; fail "--resume 15 message"; }
out=$("$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$T/lora-b" --resume 0 2>&1) && fail "--resume 0 succeeded"
[[ "$out" == *"no checkpoint-0"* ]] || { echo "$out"; fail "--resume 0 message"; }
out=$("$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$T/lora-b" --set peft_config.r=4 --resume yes 2>&1) \
  && fail "resume with another LoRA rank succeeded"
[[ "$out" == *"peft_config.r changed from 8 to 4"* ]] || { echo "$out"; fail "changed-rank message"; }
# use_dora is a resume key: a LoRA checkpoint does not continue as DoRA.
out=$("$FTRUN" configs/tiny/lora.yaml --set training_args.output_dir="$T/lora-b" --set peft_config.use_dora=true --resume yes 2>&1) \
  && fail "resume of a LoRA run with use_dora succeeded"
[[ "$out" == *"peft_config.use_dora changed from null to true"* ]] || { echo "$out"; fail "changed-use_dora message"; }
passed=$((passed+1))
echo "e2e resume: $passed passed"
