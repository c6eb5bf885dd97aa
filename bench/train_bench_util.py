#!/usr/bin/env python3
"""bench/train_bench_util.py: the pieces of bench/train_bench.sh that are easier in Python.

  prep OUT [--quick]        the models and the data (below) under OUT, and OUT/models.json
  peak OUT.json             fp32 and bf16 matmul peaks (torch, 2048^3, the current thread count);
                            run again on the same file: keeps the better of the measurements
  ftrun-result OUT_DIR W    tokens/s of one ftrun run from its metrics.jsonl, first W steps dropped
  table RESULTS.jsonl MODELS.json PEAKS.json   the markdown table and the goal check

Models (random weights N(0, 0.02), norms 1, qkv bias 0; fp32 safetensors, config.torch_dtype
float32, so `torch_dtype: bfloat16` / torch_dtype=torch.bfloat16 cast them once while loading):
  llama      HF Llama layout (ftrun and transformers read the same directory)
  chatglm    GLM-4-9B-chat layout (model_type chatglm: fused qkv with bias, multi-query groups,
             padded_vocab_size, rope_ratio) for ftrun
  glm-hf     the same weights in transformers' native `glm` layout (glm-4-9b-chat-hf: q/k/v split
             from query_key_value, gate_up_proj = dense_h_to_4h), for the HF column; transformers
             4.49 has no native chatglm class and the remote code is not used
Tokenizers: the embedded tiny models' sentencepiece files (examples/tiny), only so that ftrun can
start; the data is pre-tokenized (input_ids/labels rows), ids drawn below the tiny tokenizer's
size. The id values do not change the work: the embedding and LM head are the full vocabulary.

Needs only the standard library; torch (when importable) draws the weights faster and measures
the peaks.
"""
import json
import math
import os
import random
import shutil
import struct
import sys
from array import array

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The 60M Llama, a GLM-4-shaped model of about the same size, and --quick's small ones.
SIZES = {
    "full": dict(hidden=512, layers=8, heads=8, kv=4, glm_groups=2, ffn=1408, vocab=32000,
                 glm_vocab=32768, seq=256, batch=4),
    "quick": dict(hidden=256, layers=4, heads=4, kv=2, glm_groups=2, ffn=704, vocab=8000,
                  glm_vocab=8192, seq=128, batch=4),
}
DATA_IDS = 400  # ids below the tiny tokenizers' sizes (405 / 410)
PROMPT_FRACTION = 0.25  # first quarter of each row is prompt (labels -100), as SFT rows are


def _randn_bytes(n, rng):
    """n float32 N(0, 0.02) values as bytes (torch if present; else a tiled random block)."""
    try:
        import torch
        g = torch.Generator().manual_seed(rng.randrange(1 << 30))
        return (torch.randn(n, generator=g) * 0.02).numpy().tobytes()
    except Exception:
        block = getattr(_randn_bytes, "block", None)
        if block is None:
            block = array("f", (rng.gauss(0.0, 0.02) for _ in range(1 << 18))).tobytes()
            _randn_bytes.block = block
        reps = (4 * n + len(block) - 1) // len(block)
        return (block * reps)[:4 * n]


def write_safetensors(path, tensors):
    """tensors: [(name, shape, float32 bytes)] -> path (header + data, format pt)."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, data in tensors:
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, data in tensors:
            f.write(data)


def ones(n):
    return array("f", [1.0]).tobytes() * n


def zeros(n):
    return bytes(4 * n)


def make_llama(out, s, rng):
    os.makedirs(out, exist_ok=True)
    tiny = os.path.join(REPO, "examples/tiny/model")
    cfg = json.load(open(os.path.join(tiny, "config.json")))
    H, F, V, L, nh, kv = s["hidden"], s["ffn"], s["vocab"], s["layers"], s["heads"], s["kv"]
    hd = H // nh
    cfg.update(hidden_size=H, intermediate_size=F, num_hidden_layers=L, num_attention_heads=nh,
               num_key_value_heads=kv, head_dim=hd, vocab_size=V, max_position_embeddings=1024)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(tiny, f), out)
    t = [("model.embed_tokens.weight", (V, H), _randn_bytes(V * H, rng))]
    for i in range(L):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", (H,), ones(H)),
              (p + "post_attention_layernorm.weight", (H,), ones(H))]
        for name, shape in (("self_attn.q_proj", (nh * hd, H)), ("self_attn.k_proj", (kv * hd, H)),
                            ("self_attn.v_proj", (kv * hd, H)), ("self_attn.o_proj", (H, nh * hd)),
                            ("mlp.gate_proj", (F, H)), ("mlp.up_proj", (F, H)), ("mlp.down_proj", (H, F))):
            t.append((p + name + ".weight", shape, _randn_bytes(shape[0] * shape[1], rng)))
    t += [("model.norm.weight", (H,), ones(H)), ("lm_head.weight", (V, H), _randn_bytes(V * H, rng))]
    write_safetensors(os.path.join(out, "model.safetensors"), t)


def make_chatglm_and_glm(out_glm, out_hf, s, rng):
    """GLM-4 layout for ftrun and the same weights in transformers' `glm` layout."""
    os.makedirs(out_glm, exist_ok=True)
    os.makedirs(out_hf, exist_ok=True)
    tiny = os.path.join(REPO, "examples/tiny/glm4-model")
    cfg = json.load(open(os.path.join(tiny, "config.json")))
    H, F, V, L, nh, g = s["hidden"], s["ffn"], s["glm_vocab"], s["layers"], s["heads"], s["glm_groups"]
    hd = H // nh
    cfg.update(hidden_size=H, ffn_hidden_size=F, num_layers=L, num_hidden_layers=L, num_attention_heads=nh,
               multi_query_group_num=g, kv_channels=hd, padded_vocab_size=V, seq_length=1024)
    json.dump(cfg, open(os.path.join(out_glm, "config.json"), "w"), indent=2)
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(tiny, f), out_glm)
    # glm-4-9b-chat-hf's config.json, same shape (rope_theta = 10000 x rope_ratio).
    hf_cfg = {"architectures": ["GlmForCausalLM"], "model_type": "glm", "vocab_size": V, "hidden_size": H,
              "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": nh,
              "num_key_value_heads": g, "head_dim": hd, "partial_rotary_factor": 0.5, "hidden_act": "silu",
              "attention_dropout": 0.0, "max_position_embeddings": 1024, "initializer_range": 0.02,
              "rms_norm_eps": cfg["layernorm_epsilon"], "use_cache": True, "tie_word_embeddings": False,
              "rope_theta": 10000.0 * cfg.get("rope_ratio", 1), "pad_token_id": cfg["pad_token_id"],
              "eos_token_id": cfg["eos_token_id"], "attention_bias": True, "torch_dtype": "float32"}
    json.dump(hf_cfg, open(os.path.join(out_hf, "config.json"), "w"), indent=2)
    q, kvd = nh * hd, g * hd
    emb = _randn_bytes(V * H, rng)
    a = [("transformer.embedding.word_embeddings.weight", (V, H), emb)]
    b = [("model.embed_tokens.weight", (V, H), emb)]
    for i in range(L):
        p, ph = f"transformer.encoder.layers.{i}.", f"model.layers.{i}."
        qkv = _randn_bytes((q + 2 * kvd) * H, rng)
        qkv_b = zeros(q + 2 * kvd)
        dense = _randn_bytes(H * q, rng)
        h4h = _randn_bytes(2 * F * H, rng)
        fourh = _randn_bytes(H * F, rng)
        a += [(p + "input_layernorm.weight", (H,), ones(H)),
              (p + "self_attention.query_key_value.weight", (q + 2 * kvd, H), qkv),
              (p + "self_attention.query_key_value.bias", (q + 2 * kvd,), qkv_b),
              (p + "self_attention.dense.weight", (H, q), dense),
              (p + "post_attention_layernorm.weight", (H,), ones(H)),
              (p + "mlp.dense_h_to_4h.weight", (2 * F, H), h4h),
              (p + "mlp.dense_4h_to_h.weight", (H, F), fourh)]
        # Row-major: q, k and v are consecutive row blocks of query_key_value.
        r = 4 * H
        b += [(ph + "input_layernorm.weight", (H,), ones(H)),
              (ph + "self_attn.q_proj.weight", (q, H), qkv[:q * r]),
              (ph + "self_attn.k_proj.weight", (kvd, H), qkv[q * r:(q + kvd) * r]),
              (ph + "self_attn.v_proj.weight", (kvd, H), qkv[(q + kvd) * r:]),
              (ph + "self_attn.q_proj.bias", (q,), zeros(q)),
              (ph + "self_attn.k_proj.bias", (kvd,), zeros(kvd)),
              (ph + "self_attn.v_proj.bias", (kvd,), zeros(kvd)),
              (ph + "self_attn.o_proj.weight", (H, q), dense),
              (ph + "post_attention_layernorm.weight", (H,), ones(H)),
              (ph + "mlp.gate_up_proj.weight", (2 * F, H), h4h),
              (ph + "mlp.down_proj.weight", (H, F), fourh)]
    head = _randn_bytes(V * H, rng)
    a += [("transformer.encoder.final_layernorm.weight", (H,), ones(H)),
          ("transformer.output_layer.weight", (V, H), head)]
    b += [("model.norm.weight", (H,), ones(H)), ("lm_head.weight", (V, H), head)]
    write_safetensors(os.path.join(out_glm, "model.safetensors"), a)
    write_safetensors(os.path.join(out_hf, "model.safetensors"), b)


def matmul_params(kind, s):
    """(weights every token goes through in a matmul, incl. the LM head; attention width;
    per-token LoRA adapter weights for r=8 on all projections as ftrun targets them)."""
    H, F, L, nh = s["hidden"], s["ffn"], s["layers"], s["heads"]
    hd = H // nh
    kvd = (s["kv"] if kind == "llama" else s["glm_groups"]) * hd
    V = s["vocab"] if kind == "llama" else s["glm_vocab"]
    per_layer = H * nh * hd + 2 * H * kvd + nh * hd * H + 3 * H * F
    # LoRA r: A (r x in) + B (out x r) per adapted linear; llama: q,k,v,o,gate,up,down;
    # chatglm: query_key_value, dense, dense_h_to_4h, dense_4h_to_h (the same linears, fused).
    r = 8
    if kind == "llama":
        lin = [(H, nh * hd), (H, kvd), (H, kvd), (nh * hd, H), (H, F), (H, F), (F, H)]
    else:
        lin = [(H, nh * hd + 2 * kvd), (nh * hd, H), (H, 2 * F), (F, H)]
    lora = L * sum(r * (i + o) for i, o in lin)
    return L * per_layer + V * H, L * nh * hd, lora


def prep(out, quick):
    s = SIZES["quick" if quick else "full"]
    rng = random.Random(0)
    make_llama(os.path.join(out, "llama"), s, rng)
    make_chatglm_and_glm(os.path.join(out, "chatglm"), os.path.join(out, "glm-hf"), s, rng)
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    seq, rows = s["seq"], 64
    n_prompt = int(seq * PROMPT_FRACTION)
    with open(os.path.join(out, "data", "train.jsonl"), "w") as f:
        for _ in range(rows):
            ids = [rng.randrange(3, DATA_IDS) for _ in range(seq)]
            f.write(json.dumps({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]}) + "\n")
    models = {}
    for kind in ("llama", "chatglm"):
        mm, att, lora = matmul_params(kind, s)
        V = s["vocab"] if kind == "llama" else s["glm_vocab"]
        total = mm + V * s["hidden"] + (2 * s["layers"] + 1) * s["hidden"]  # + embedding, norms
        if kind == "chatglm":
            total += s["layers"] * (s["hidden"] + 2 * s["glm_groups"] * (s["hidden"] // s["heads"]))  # qkv bias
        models[kind] = {"params": total, "matmul_params": mm, "attn_width": att, "lora_params": lora, "seq": seq,
                        "batch": s["batch"], "layers": s["layers"], "hidden": s["hidden"],
                        "vocab": s["vocab"] if kind == "llama" else s["glm_vocab"]}
    json.dump({"size": "quick" if quick else "full", "sizes": s, "models": models},
              open(os.path.join(out, "models.json"), "w"), indent=2)
    print(f"train_bench: models and data in {out} ({'quick' if quick else 'issue'} sizes: hidden {s['hidden']}, "
          f"{s['layers']} layers, vocab {s['vocab']}/{s['glm_vocab']}, batch {s['batch']} x {seq})")


def peak(out):
    """Best-of-5 GFLOP/s of a 2048^3 matmul in fp32 and bf16, after a warm-up."""
    import time
    import torch
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    n = 2048
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n).to(dt)
        b = torch.randn(n, n).to(dt)
        torch.mm(a, b)
        best = math.inf
        for _ in range(5):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
        res[name + "_gflops"] = 2 * n ** 3 / best / 1e9
    # Measured before and after the runs: the peak is the better of the two (a busy machine
    # lowers it), and both are kept so that drift shows.
    if os.path.exists(out):
        prev = json.load(open(out))
        res["measurements"] = prev.get("measurements", []) + [{k: res[k] for k in ("fp32_gflops", "bf16_gflops")}]
        for k in ("fp32_gflops", "bf16_gflops"):
            res[k] = max(res[k], prev[k])
    else:
        res["measurements"] = [{k: res[k] for k in ("fp32_gflops", "bf16_gflops")}]
    json.dump(res, open(out, "w"))
    last = res["measurements"][-1]
    print(f"train_bench: matmul 2048^3, {res['threads']} threads: fp32 {last['fp32_gflops']:.0f} GFLOP/s, "
          f"bf16 {last['bf16_gflops']:.0f} GFLOP/s")


def ftrun_result(out_dir, warmup):
    recs = [json.loads(l) for l in open(os.path.join(out_dir, "metrics.jsonl")) if "tokens_per_second" in l]
    timed = recs[warmup:]
    if not timed:
        raise SystemExit(f"train_bench: {out_dir}/metrics.jsonl has {len(recs)} step records, need more than {warmup}")
    # logging_steps 1: one record a step; its tokens/s is that step's input tokens / its seconds.
    # Every row has the same length (no padding), so each step has the same token count.
    secs = sum(1.0 / r["tokens_per_second"] for r in timed)
    print(json.dumps({"tokens_per_second": len(timed) / secs, "timed_steps": len(timed),
                      "losses": [r["loss"] for r in recs]}))


# Training FLOPs per token (a matmul of m x k by k x n = 2mkn FLOPs; attention scores and the
# weighted sum over the full s x s square, as both sides compute it, without causal halving):
#   N = weights in matmuls incl. the LM head (not the embedding lookup); A = layers x heads x
#   head_dim; s_kv = keys per query (seq, + 16 virtual tokens for P-Tuning v2);
#   forward = 2 N + 4 A s_kv; backward = input gradients (2 N + 8 A s_kv: attention has no
#   weights, both its operands get gradients) + weight gradients (2 N for trained weights).
#   full SFT  = 6 N + 12 A s_kv
#   LoRA      = 4 N + 12 A s_kv + 6 N_lora   (frozen base: forward + input gradients)
#   P-Tuning  = 4 N + 12 A s_kv              (prefix keys/values at every layer)
def flops_per_token(m, strategy, prefix_tokens=16):
    s_kv = m["seq"] + (prefix_tokens if strategy == "ptuning" else 0)
    attn = 12 * m["attn_width"] * s_kv
    if strategy == "full":
        return 6 * m["matmul_params"] + attn
    if strategy == "lora":
        return 4 * m["matmul_params"] + attn + 6 * m["lora_params"]
    return 4 * m["matmul_params"] + attn


MODE_NAMES = {"fp32": "fp32", "autocast": "bf16 autocast", "bf16": "bf16-held weights"}
STRAT_NAMES = {"lora": "LoRA r=8", "ptuning": "P-Tuning v2 (16)", "full": "full SFT"}


def table(results_path, models_path, peaks_path):
    res = [json.loads(l) for l in open(results_path) if l.strip()]
    models = json.load(open(models_path))
    peaks = json.load(open(peaks_path)) if peaks_path and os.path.exists(peaks_path) else None
    by = {(r["model"], r["strategy"], r["mode"], r["side"]): r for r in res}
    have_hf = any(r["side"] == "hf" and r.get("ok") for r in res)

    def fmt_tps(r):
        if r is None:
            return "-"
        return f"{r['tokens_per_second']:,.0f}" if r.get("ok") else "failed"

    def fmt_rss(r):
        return f"{r['peak_rss_mb']:,.0f}" if r and r.get("ok") and r.get("peak_rss_mb") else "-"

    def mfu(r, m, strat):
        if not (r and r.get("ok") and peaks):
            return "-"
        achieved = r["tokens_per_second"] * flops_per_token(m, strat) / 1e9
        return f"{100 * achieved / peaks['bf16_gflops']:.1f} / {100 * achieved / peaks['fp32_gflops']:.0f}"

    def ratio(a, b, key):
        if a and b and a.get("ok") and b.get("ok") and b.get(key):
            return f"{a[key] / b[key]:.2f}x"
        return "-"

    lines = []
    if peaks:
        each = ", ".join(f"{m['fp32_gflops']:.0f} / {m['bf16_gflops']:.0f}" for m in peaks.get("measurements", []))
        lines.append(f"Matmul peaks (2048^3, torch {peaks['torch']}, {peaks['threads']} threads, this run; the better "
                     f"of before and after the runs, fp32 / bf16 GFLOP/s: {each}): fp32 {peaks['fp32_gflops']:.0f} "
                     f"GFLOP/s, bf16 {peaks['bf16_gflops']:.0f} GFLOP/s. MFU column: % of the bf16 peak / % of the "
                     "fp32 peak (model FLOPs: gradient-checkpointing recompute is not counted).")
    if not have_hf:
        lines.append("**HF transformers + PEFT: absent or not run** (no build/pyref venv, or every HF run "
                     "failed); only the ftrun columns are filled.")
    lines.append("")
    lines.append("| model | strategy | mode | ftrun tok/s | HF+PEFT tok/s | ftrun/HF | ftrun peak RSS MB | "
                 "HF peak RSS MB | RSS ftrun/HF | ftrun MFU % bf16/fp32 | HF MFU % bf16/fp32 |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order_models = [k for k in ("llama", "chatglm") if any(r["model"] == k for r in res)]
    for mk in order_models:
        m = models["models"][mk]
        label = ("Llama" if mk == "llama" else "GLM-4-shaped") + f" {m['params'] / 1e6:.1f}M"
        for st in ("lora", "ptuning", "full"):
            for mode in ("fp32", "autocast", "bf16"):
                f, h = by.get((mk, st, mode, "ftrun")), by.get((mk, st, mode, "hf"))
                if f is None and h is None:
                    continue
                lines.append(f"| {label} | {STRAT_NAMES[st]} | {MODE_NAMES[mode]} | {fmt_tps(f)} | {fmt_tps(h)} | "
                             f"{ratio(f, h, 'tokens_per_second')} | {fmt_rss(f)} | {fmt_rss(h)} | "
                             f"{ratio(f, h, 'peak_rss_mb')} | {mfu(f, m, st)} | {mfu(h, m, st)} |")
    # What each side actually held and trained in, where that is not plain fp32.
    notes = []
    for r in res:
        if r.get("ok") and r["mode"] == "bf16":
            line = r.get("ftrun_line") or ""
            what = (line.split(" | ", 1)[1] if " | " in line else "fp32 weights") if r["side"] == "ftrun" else \
                f"trainable params held in {r.get('param_dtype')} ({r.get('trainable_params', 0):,})"
            notes.append(f"- {r['side']} {r['model']} {STRAT_NAMES[r['strategy']]}, bf16-held: {what}")
    if notes:
        lines.append("")
        lines.append("bf16-held runs, as each side reports them:")
        lines += notes
    failures = [r for r in res if not r.get("ok")]
    if failures:
        lines.append("")
        lines.append("Failed runs:")
        for r in failures:
            lines.append(f"- {r['side']} {r['model']} {r['strategy']} {r['mode']}: {r.get('error', '?')}")
    # The goal: ftrun's best bf16 (autocast or bf16-held) >= 1.5x HF's best bf16 tokens/s,
    # and its peak RSS (of that run) <= 0.7x HF's (of its best run), for LoRA and full SFT.
    if have_hf:
        lines.append("")
        lines.append("Goal check (best bf16 mode per side; goal: tokens/s >= 1.5x, peak RSS <= 0.7x):")
        for mk in order_models:
            for st in ("lora", "ptuning", "full"):
                best = {}
                for side in ("ftrun", "hf"):
                    rs = [by.get((mk, st, mode, side)) for mode in ("autocast", "bf16")]
                    rs = [r for r in rs if r and r.get("ok")]
                    best[side] = max(rs, key=lambda r: r["tokens_per_second"]) if rs else None
                f, h = best["ftrun"], best["hf"]
                if not (f and h):
                    continue
                sp = f["tokens_per_second"] / h["tokens_per_second"]
                rss = f["peak_rss_mb"] / h["peak_rss_mb"] if f.get("peak_rss_mb") and h.get("peak_rss_mb") else float("nan")
                ok = "no goal in the issue" if st == "ptuning" else \
                    "meets the goal" if sp >= 1.5 and rss <= 0.7 else "misses the goal"
                lines.append(f"- {mk} {STRAT_NAMES[st]}: ftrun {MODE_NAMES[f['mode']]} {f['tokens_per_second']:,.0f} "
                             f"vs HF {MODE_NAMES[h['mode']]} {h['tokens_per_second']:,.0f} tok/s = {sp:.2f}x; "
                             f"peak RSS {f['peak_rss_mb']:,.0f} vs {h['peak_rss_mb']:,.0f} MB = {rss:.2f}x "
                             f"({ok})")
    print("\n".join(lines))


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd = argv[0]
    if cmd == "prep":
        prep(argv[1], "--quick" in argv[2:])
    elif cmd == "peak":
        peak(argv[1])
    elif cmd == "ftrun-result":
        ftrun_result(argv[1], int(argv[2]))
    elif cmd == "table":
        table(argv[1], argv[2], argv[3] if len(argv) > 3 else None)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
