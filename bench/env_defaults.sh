#!/usr/bin/env bash
# What ftrun's thread and allocator defaults (launcher/main.cpp, README "Environment defaults")
# are worth: tokens/s of `ftrun` on a 60M Llama-shaped model (hidden 512, 8 layers, 8 heads /
# 4 kv heads, ffn 1408, vocab 32000; random weights, the tiny model's tokenizer), batch 4 of
# about 256 tokens, LoRA r=8 on all 7 projections and full SFT, STEPS steps, run
#   - as shipped (ftrun adds OMP_WAIT_POLICY=PASSIVE and GLIBC_TUNABLES=glibc.malloc.hugetlb=1),
#   - with FTRUN_NO_ENV_DEFAULTS=1 (the libraries' own settings),
#   - and the variants in VARIANTS (extra environment on top of the defaults, e.g.
#     "OPENBLAS_NUM_THREADS=1").
# Runs alternate between the settings, REPEAT rounds; the table gives the best and the median
# tokens/s per setting over steps 3..STEPS (metrics.jsonl's tokens_per_second, logged every
# 2 steps, first record dropped as warm-up).
# Usage: bench/env_defaults.sh [FTRUN (default build/ftrun)]   (from anywhere)
# Environment: REPEAT (default 3), STEPS (10), VARIANTS (default "OPENBLAS_NUM_THREADS=1").
# Not part of ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
FTRUN=$(realpath "${1:-build/ftrun}")
[ -x "$FTRUN" ] || { echo "no ftrun binary at $FTRUN (build it: ninja -C build ftrun)" >&2; exit 2; }
REPEAT=${REPEAT:-3}
STEPS=${STEPS:-10}
VARIANTS=${VARIANTS-OPENBLAS_NUM_THREADS=1}
T=$(mktemp -d /tmp/ftrun_bench_env.XXXXXX)
trap 'rm -rf "$T"' EXIT

# The model: HF Llama layout, weights N(0, 0.02) (one random block, tiled), norms 1.
python3 - "$T/model" examples/tiny/model examples/tiny/tokenizer_corpus.txt "$T/data" <<'EOF'
import json, os, random, shutil, struct, sys
from array import array
out, tiny, corpus, data = sys.argv[1:5]
os.makedirs(out); os.makedirs(data)
cfg = json.load(open(os.path.join(tiny, "config.json")))
cfg.update(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
           num_key_value_heads=4, head_dim=64, vocab_size=32000, max_position_embeddings=1024)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
for f in ("tokenizer.model", "tokenizer_config.json"):
    shutil.copy(os.path.join(tiny, f), out)
H, F, V, KV = 512, 1408, 32000, 256
shapes = [("model.embed_tokens.weight", (V, H)), ("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
for i in range(8):
    p = f"model.layers.{i}."
    shapes += [(p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,)),
               (p + "self_attn.q_proj.weight", (H, H)), (p + "self_attn.k_proj.weight", (KV, H)),
               (p + "self_attn.v_proj.weight", (KV, H)), (p + "self_attn.o_proj.weight", (H, H)),
               (p + "mlp.gate_proj.weight", (F, H)), (p + "mlp.up_proj.weight", (F, H)),
               (p + "mlp.down_proj.weight", (H, F))]
rng = random.Random(0)
block = array("f", (rng.gauss(0.0, 0.02) for _ in range(1 << 18))).tobytes()
header, off = {"__metadata__": {"format": "pt"}}, 0
for name, shape in shapes:
    n = 1
    for d in shape: n *= d
    header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + 4 * n]}
    off += 4 * n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for name, shape in shapes:
        n = 1
        for d in shape: n *= d
        if len(shape) == 1:
            f.write(array("f", [1.0]) .tobytes() * n)
            continue
        left = 4 * n
        while left:
            chunk = block[:left]
            f.write(chunk); left -= len(chunk)
# Data: about 256 tokens a sample (the tiny tokenizer has 400 pieces: ~2 characters a token).
lines = [l for l in open(corpus).read().split("\n") if l.strip()]
with open(os.path.join(data, "train.jsonl"), "w") as f:
    for i in range(64):
        q = " ".join(lines[(i * 7 + k) % len(lines)] for k in range(4))
        a = " ".join(lines[(i * 13 + k) % len(lines)] for k in range(12))
        f.write(json.dumps({"messages": [{"role": "user", "content": q[:120]},
                                         {"role": "assistant", "content": a[:420]}]}) + "\n")
EOF

cat > "$T/run.yaml" <<EOF
model_dir: $T/model
data_dir: $T/data
chat_template: llama3
data_config:
  train_file: train.jsonl
max_input_length: 64
max_output_length: 192
training_args:
  output_dir: $T/out
  max_steps: $STEPS
  learning_rate: 1e-4
  per_device_train_batch_size: 4
  logging_strategy: steps
  logging_steps: 2
  save_strategy: "no"
  eval_strategy: "no"
EOF
lora='peft_config={peft_type: LORA, r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}'

# tokens/s records after the first, one per line
run() {  # run STRATEGY ENV...
  local strat=$1; shift
  rm -rf "$T/out"
  local sets=()
  [ "$strat" = lora ] && sets=(--set "$lora")
  env "$@" "$FTRUN" "$T/run.yaml" "${sets[@]}" > "$T/log" 2>&1 || { cat "$T/log" >&2; exit 1; }
  python3 -c '
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if "tokens_per_second" in l]
print(" ".join(str(x["tokens_per_second"]) for x in r[1:]))' "$T/out/metrics.jsonl"
}

settings=("defaults" "FTRUN_NO_ENV_DEFAULTS=1")
IFS=';' read -r -a extra <<< "$VARIANTS"
for v in "${extra[@]}"; do [ -n "$v" ] && settings+=("$v"); done

declare -A tps
for r in $(seq "$REPEAT"); do
  for strat in lora full; do
    for s in "${settings[@]}"; do
      envs=()
      [ "$s" != defaults ] && read -r -a envs <<< "$s"
      tps["$strat|$s"]+=" $(run "$strat" "${envs[@]}")"
      echo "round $r $strat [$s]: ${tps["$strat|$s"]}" >&2
    done
  done
done

echo "| mode | setting | tokens/s best | tokens/s median | vs FTRUN_NO_ENV_DEFAULTS=1 (median) |"
echo "|---|---|---:|---:|---:|"
for strat in lora full; do
  base=$(printf '%s\n' ${tps["$strat|FTRUN_NO_ENV_DEFAULTS=1"]} | sort -g | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
  for s in "${settings[@]}"; do
    printf '%s\n' ${tps["$strat|$s"]} | sort -g | awk -v m="$strat" -v s="$s" -v b="$base" '
      {a[NR]=$1} END {med=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2;
        printf "| %s | %s | %.0f | %.0f | %+.0f%% |\n", (m=="lora"?"LoRA r=8, 7 projections":"full SFT"), s, a[NR], med, 100*(med/b-1)}'
  done
done
