#!/usr/bin/env python3
"""bench/gpu/gpu_bench.py: the Python half of bench/gpu/gpu_bench.sh (issue 14, GPU benchmark).

  prep OUT --size gpu|dry --device cuda|cpu   models, data and OUT/models.json (below)
  peak OUT.json --device cuda|cpu             bf16 matmul peak (run again: keeps the better one)
  hf --model DIR --data F --strategy lora|full --device cuda|cpu --warmup W --steps N --batch B
                                              one HF transformers + PEFT run; prints one JSON line
  ftrun-result OUT_DIR W                      tokens/s (first W steps dropped) and CUDA peaks of
                                              one ftrun run from its metrics.jsonl; one JSON line
  table RESULTS.jsonl MODELS.json PEAKS.json MD JSON [--dry-run]
                                              the markdown table + goal check (MD) and JSON

Models (random N(0, 0.02) weights drawn on the device, norms 1, biases 0; bf16 safetensors,
config.torch_dtype bfloat16), written once per call:
  llama   HF Llama layout, Llama-3.2-1B-like: hidden 2048, 16 layers, 32 heads / 8 kv heads,
          ffn 8192, vocab 32000, untied head (1.10B parameters)
  glm     transformers' native `glm` layout (GlmForCausalLM, glm-4-9b-chat-hf), which ftrun
          reads as its family `glm`: both sides read the same files. GLM-4's shape scaled to
          ~1B: hidden 2048, 18 layers, 16 heads of 128, 2 kv groups, q/k/v bias, partial
          rotary 0.5, fused gate_up_proj, ffn 6848, vocab 32768 (1.06B parameters)
  --size dry: the same layouts at hidden 128, 2 layers (a CPU dry run of the plumbing).
Tokenizers: the tiny models' sentencepiece files (examples/tiny/model, examples/tiny/glm-model),
only so that ftrun can start: the data is pre-tokenized rows (input_ids, labels; first quarter
prompt, label -100), all of one length (no padding), ids below the tiny tokenizers' sizes.

FLOPs (train_bench_util.flops_per_token, the CPU benchmark's formula, reused): per token, full
SFT 6N + 12·A·s, LoRA 4N + 12·A·s + 6·N_lora; N = weights in matmuls incl. the LM head,
A = layers x heads x head_dim, s = sequence length (the full s x s score square, no causal
halving); gradient-checkpointing recompute is not counted (model FLOPs, as MFU conventionally is).
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench"))
from train_bench_util import flops_per_token  # noqa: E402  (the CPU benchmark's formula)

SIZES = {
    "gpu": {
        "llama": dict(hidden=2048, layers=16, heads=32, kv=8, head_dim=64, ffn=8192, vocab=32000),
        "glm": dict(hidden=2048, layers=18, heads=16, kv=2, head_dim=128, ffn=6848, vocab=32768),
        "seq": 2048, "batch": 4, "rows": 64,
    },
    "dry": {
        "llama": dict(hidden=128, layers=2, heads=4, kv=2, head_dim=32, ffn=256, vocab=1024),
        "glm": dict(hidden=128, layers=2, heads=2, kv=1, head_dim=64, ffn=256, vocab=1024),
        "seq": 64, "batch": 2, "rows": 16,
    },
}
DATA_IDS = 400  # below the tiny tokenizers' sizes (405 / 410)
PROMPT_FRACTION = 0.25
LORA_R = 8
LORA_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                "glm": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"]}
TINY = {"llama": "examples/tiny/model", "glm": "examples/tiny/glm-model"}


def linears(kind, s):
    """[(in, out)] of one layer's projections, as named in LORA_TARGETS."""
    H, F, q, kvd = s["hidden"], s["ffn"], s["heads"] * s["head_dim"], s["kv"] * s["head_dim"]
    if kind == "llama":
        return [(H, q), (H, kvd), (H, kvd), (q, H), (H, F), (H, F), (F, H)]
    return [(H, q), (H, kvd), (H, kvd), (q, H), (H, 2 * F), (F, H)]


def model_stats(kind, s, seq, batch):
    lin = linears(kind, s)
    L, H, V = s["layers"], s["hidden"], s["vocab"]
    matmul = L * sum(i * o for i, o in lin) + V * H  # + LM head
    params = matmul + V * H + (2 * L + 1) * H  # + embedding, norms
    if kind == "glm":
        params += L * (s["heads"] + 2 * s["kv"]) * s["head_dim"]  # q/k/v bias
    return {"params": params, "matmul_params": matmul, "attn_width": L * s["heads"] * s["head_dim"],
            "lora_params": L * sum(LORA_R * (i + o) for i, o in lin), "seq": seq, "batch": batch,
            "sizes": s}


def write_model(kind, out, s, device):
    import torch
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    tiny = os.path.join(REPO, TINY[kind])
    cfg = json.load(open(os.path.join(tiny, "config.json")))
    H, F, L, V, nh, kv, hd = (s[k] for k in ("hidden", "ffn", "layers", "vocab", "heads", "kv", "head_dim"))
    cfg.update(hidden_size=H, intermediate_size=F, num_hidden_layers=L, num_attention_heads=nh,
               num_key_value_heads=kv, head_dim=hd, vocab_size=V, max_position_embeddings=4096,
               tie_word_embeddings=False, torch_dtype="bfloat16")
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(tiny, f), out)
    g = torch.Generator(device=device).manual_seed(0 if kind == "llama" else 1)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()

    def ones(n):
        return torch.ones(n, dtype=torch.bfloat16)

    def zeros(n):
        return torch.zeros(n, dtype=torch.bfloat16)

    q, kvd = nh * hd, kv * hd
    t = {"model.embed_tokens.weight": rnd(V, H), "model.norm.weight": ones(H), "lm_head.weight": rnd(V, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ones(H)
        t[p + "post_attention_layernorm.weight"] = ones(H)
        t[p + "self_attn.q_proj.weight"] = rnd(q, H)
        t[p + "self_attn.k_proj.weight"] = rnd(kvd, H)
        t[p + "self_attn.v_proj.weight"] = rnd(kvd, H)
        t[p + "self_attn.o_proj.weight"] = rnd(H, q)
        t[p + "mlp.down_proj.weight"] = rnd(H, F)
        if kind == "llama":
            t[p + "mlp.gate_proj.weight"] = rnd(F, H)
            t[p + "mlp.up_proj.weight"] = rnd(F, H)
        else:
            t[p + "mlp.gate_up_proj.weight"] = rnd(2 * F, H)
            t[p + "self_attn.q_proj.bias"] = zeros(q)
            t[p + "self_attn.k_proj.bias"] = zeros(kvd)
            t[p + "self_attn.v_proj.bias"] = zeros(kvd)
    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})


def cmd_prep(a):
    import random
    sz = SIZES[a.size]
    t0 = time.time()
    models = {}
    for kind in ("llama", "glm"):
        write_model(kind, os.path.join(a.out, kind), sz[kind], a.device)
        models[kind] = model_stats(kind, sz[kind], sz["seq"], sz["batch"])
    rng = random.Random(0)
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    seq = sz["seq"]
    n_prompt = int(seq * PROMPT_FRACTION)
    with open(os.path.join(a.out, "data", "train.jsonl"), "w") as f:
        for _ in range(sz["rows"]):
            ids = [rng.randrange(3, DATA_IDS) for _ in range(seq)]
            f.write(json.dumps({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]}) + "\n")
    json.dump({"size": a.size, "seq": seq, "batch": sz["batch"], "models": models},
              open(os.path.join(a.out, "models.json"), "w"), indent=2)
    print(f"gpu_bench: models written in {time.time() - t0:.0f} s ({a.size} sizes; "
          + ", ".join(f"{k} {m['params'] / 1e6:,.1f}M" for k, m in models.items())
          + f"; batch {sz['batch']} x {seq})", flush=True)


def cmd_peak(a):
    """bf16 matmul peak: mean of timed products after warm-ups (KINDS.md's method)."""
    import torch
    if a.device == "cuda":
        n, warm, reps = 8192, 3, 10
        x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(warm):
            torch.mm(x, y)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(x, y)
        torch.cuda.synchronize()
        secs = (time.perf_counter() - t0) / reps
        what = f"{n}^3 bf16 on {torch.cuda.get_device_name(0)}"
    else:
        n, reps = 1024, 10
        x = torch.randn(n, n, dtype=torch.bfloat16)
        y = torch.randn(n, n, dtype=torch.bfloat16)
        torch.mm(x, y)
        secs = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(x, y)
            secs = min(secs, time.perf_counter() - t0)
        what = f"{n}^3 bf16 on the CPU ({torch.get_num_threads()} threads)"
    tflops = 2 * n ** 3 / secs / 1e12
    res = {"what": what, "torch": torch.__version__, "measurements": [tflops]}
    if os.path.exists(a.out):
        res["measurements"] = json.load(open(a.out))["measurements"] + [tflops]
    res["bf16_tflops"] = max(res["measurements"])
    json.dump(res, open(a.out, "w"))
    print(f"gpu_bench: matmul peak {what}: {tflops:.1f} TFLOP/s", flush=True)


def cmd_hf(a):
    """One HF run: what HF Trainer does with bf16: true on a bf16-loaded model (autocast; full
    SFT keeps bf16 weights, grads and AdamW state), sdpa, gradient checkpointing, without its
    bookkeeping."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dev = torch.device(a.device)
    # transformers >= 4.56 names from_pretrained's dtype argument `dtype` (torch_dtype deprecated);
    # older versions would take `dtype` as a config attribute and silently load fp32.
    major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    dkw = {"dtype" if major_minor >= (4, 56) else "torch_dtype": torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(a.model, attn_implementation="sdpa", **dkw).to(dev)
    assert next(model.parameters()).dtype == torch.bfloat16, "model not loaded in bf16"
    # Trainer's gradient_checkpointing=True; PEFT (and the seeds) add enable_input_require_grads.
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    if a.strategy == "lora":
        from peft import LoraConfig, TaskType, get_peft_model
        kind = "glm" if model.config.model_type == "glm" else "llama"
        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=LORA_R, lora_alpha=16,
                                                 lora_dropout=0.0, target_modules=LORA_TARGETS[kind]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    total = a.warmup + a.steps
    # Trainer's AdamW (fused where CUDA offers it, as adamw_torch_fused), lr 1e-4, no decay.
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            **({"fused": True} if dev.type == "cuda" else {}))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, float(total - s) / float(total)))
    rows = [json.loads(l) for l in open(a.data) if l.strip()]
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()  # from the training start, weights included (ftrun's too)
    losses, secs, tokens = [], [], []
    for step in range(total):
        t0 = time.perf_counter()
        group = [rows[(step * a.batch + k) % len(rows)] for k in range(a.batch)]
        ids = torch.tensor([r["input_ids"] for r in group], dtype=torch.long).to(dev, non_blocking=True)
        labels = torch.tensor([r["labels"] for r in group], dtype=torch.long).to(dev, non_blocking=True)
        mask = torch.ones_like(ids)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))  # synchronises: the step is done when its time is taken
        secs.append(time.perf_counter() - t0)
        tokens.append(int(ids.numel()))
    timed = slice(a.warmup, total)
    res = {"tokens_per_second": sum(tokens[timed]) / sum(secs[timed]), "timed_steps": a.steps,
           "trainable_params": sum(p.numel() for p in params),
           "param_dtype": str(params[0].dtype).replace("torch.", ""), "losses": losses,
           "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"}
    if a.strategy == "lora":
        import peft
        res["versions"] += f", peft {peft.__version__}"
    if dev.type == "cuda":
        res["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        res["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2 ** 20
    print(json.dumps(res))


def cmd_ftrun_result(a):
    recs = [json.loads(l) for l in open(os.path.join(a.out_dir, "metrics.jsonl")) if "tokens_per_second" in l]
    timed = recs[a.warmup:]
    if not timed:
        raise SystemExit(f"gpu_bench: {a.out_dir}/metrics.jsonl has {len(recs)} step records, need more than {a.warmup}")
    # logging_steps 1: a record per step, each step the same token count (no padding).
    res = {"tokens_per_second": len(timed) / sum(1.0 / r["tokens_per_second"] for r in timed),
           "timed_steps": len(timed), "losses": [r["loss"] for r in recs]}
    # One number per rank (world 1 here); absent when the binary does not report them (CPU, or
    # a build without the device work).
    for key, name in (("cuda_peak_allocated_mib", "peak_allocated_mib"), ("cuda_peak_reserved_mib", "peak_reserved_mib")):
        vals = [max(r[key]) if isinstance(r[key], list) else r[key] for r in recs if r.get(key) is not None]
        if vals:
            res[name] = max(vals)
    print(json.dumps(res))


STRAT = {"lora": "LoRA r=8", "full": "full SFT"}
MODEL = {"llama": "Llama-shaped", "glm": "GLM-4-shaped (glm)"}


def cmd_table(a):
    res = [json.loads(l) for l in open(a.results) if l.strip()]
    models = json.load(open(a.models))
    peaks = json.load(open(a.peaks)) if os.path.exists(a.peaks) else None
    by = {(r["model"], r["strategy"], r["side"]): r for r in res}
    peak = peaks["bf16_tflops"] if peaks else None

    def ok(r):
        return bool(r and r.get("ok"))

    def tps(r):
        return r["tokens_per_second"] if ok(r) else None

    def mem(r):
        return r.get("peak_allocated_mib") if ok(r) else None

    def mfu(r, m, st):
        if not ok(r) or not peak:
            return None
        return 100 * r["tokens_per_second"] * flops_per_token(m, st) / (peak * 1e12)

    def f_tps(r):
        if ok(r):
            return f"{r['tokens_per_second']:,.0f}"
        if not r:
            return "-"
        err = r.get("error", "")
        return "skipped" if err.startswith("skipped") else "timed out" if err.startswith("timed out") else "failed"

    def f_mem(r):
        if not ok(r):
            return "-"
        v = mem(r)
        return f"{v:,.0f}" if v is not None else "not reported"

    def f_num(v, fmt):
        return fmt.format(v) if v is not None else "-"

    def ratio(x, y):
        return x / y if x is not None and y else None

    lines = []
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if a.dry_run:
        lines.append("**DRY RUN on the CPU: tiny models, a few steps; no figure below is a GPU measurement.**")
        lines.append("")
    lines.append(f"GPU benchmark, {when}; matmul peak: " +
                 (f"{peak:.1f} TFLOP/s ({peaks['what']}, torch {peaks['torch']}, best of "
                  f"{', '.join(f'{x:.1f}' for x in peaks['measurements'])})" if peak else "not measured") +
                 f". Batch {models['batch']} x {models['seq']} tokens, no padding; bf16 weights on both sides, "
                 "bf16 autocast, sdpa, gradient checkpointing.")
    lines.append("")
    lines.append("MFU = tokens/s x model FLOPs per token / the measured bf16 matmul peak; FLOPs per token: full SFT "
                 "6N + 12·A·s, LoRA 4N + 12·A·s + 6·N_lora (N matmul weights incl. LM head, A = layers x heads x "
                 "head_dim, s = seq; recompute not counted). Peak memory: ftrun's metrics.jsonl "
                 "cuda_peak_allocated_mib, HF torch.cuda.max_memory_allocated, both from the training start.")
    lines.append("")
    lines.append("| model | strategy | ftrun tok/s | HF+PEFT tok/s | ftrun/HF | ftrun peak MiB | HF peak MiB | "
                 "mem ftrun/HF | ftrun MFU % | HF MFU % |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    goals, summary = [], []
    for mk in ("llama", "glm"):
        if mk not in models["models"]:
            continue
        m = models["models"][mk]
        label = f"{MODEL[mk]} {m['params'] / 1e9:.2f}B" if m["params"] >= 1e8 else f"{MODEL[mk]} {m['params'] / 1e6:.1f}M"
        for st in ("lora", "full"):
            f, h = by.get((mk, st, "ftrun")), by.get((mk, st, "hf"))
            if f is None and h is None:
                continue
            sp, mr = ratio(tps(f), tps(h)), ratio(mem(f), mem(h))
            fm, hm = mfu(f, m, st), mfu(h, m, st)
            lines.append(f"| {label} | {STRAT[st]} | {f_tps(f)} | {f_tps(h)} | {f_num(sp, '{:.2f}x')} | {f_mem(f)} | "
                         f"{f_mem(h)} | {f_num(mr, '{:.2f}x')} | {f_num(fm, '{:.1f}')} | {f_num(hm, '{:.1f}')} |")
            summary.append({"model": mk, "strategy": st, "label": label, "ftrun": f, "hf": h, "speed_ratio": sp,
                            "mem_ratio": mr, "ftrun_mfu": fm, "hf_mfu": hm})

            def verdict(v, good):
                return "not measured" if v is None else ("PASS" if good(v) else "FAIL")
            if st == "lora":
                goals.append(f"- {label} LoRA tokens/s >= 1.3x HF+PEFT: {f_num(sp, '{:.2f}x')} "
                             f"-> {verdict(sp, lambda v: v >= 1.3)}")
                why = "" if mr is not None else (" (ftrun's metrics carry no cuda_peak_* keys)" if ok(f) and mem(f) is None else "")
                goals.append(f"- {label} LoRA peak memory <= 0.7x HF+PEFT: {f_num(mr, '{:.2f}x')}{why} "
                             f"-> {verdict(mr, lambda v: v <= 0.7)}")
            else:
                goals.append(f"- {label} full SFT MFU >= 45%: {f_num(fm, '{:.1f}%')} -> {verdict(fm, lambda v: v >= 45)}")
    lines.append("")
    lines.append("Goals (issue 14)" + (" — dry run, verdicts meaningless:" if a.dry_run else ":"))
    lines += goals
    notes = [f"- {r['side']} {r['model']} {r['strategy']}: {r['note']}" for r in res if r.get("note")]
    for r in res:
        if r["side"] == "hf" and ok(r) and r.get("versions"):
            notes.append(f"- hf {r['model']} {r['strategy']}: {r['versions']}; trainable params in {r.get('param_dtype')}")
            break
    fails = [f"- {r['side']} {r['model']} {r['strategy']}: {r.get('error', '?')}" for r in res if not r.get("ok")]
    if notes:
        lines += ["", "Notes:"] + notes
    if fails:
        lines += ["", "Failed or skipped runs:"] + fails
    text = "\n".join(lines)
    open(a.md, "w").write(text + "\n")
    json.dump({"dry_run": a.dry_run, "when": when, "peaks": peaks, "models": models, "rows": summary},
              open(a.json, "w"), indent=1, default=str)
    print(text)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prep")
    p.add_argument("out")
    p.add_argument("--size", choices=list(SIZES), default="gpu")
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("peak")
    p.add_argument("out")
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("hf")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--strategy", choices=["lora", "full"], required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p = sub.add_parser("ftrun-result")
    p.add_argument("out_dir")
    p.add_argument("warmup", type=int)
    p = sub.add_parser("table")
    for k in ("results", "models", "peaks", "md", "json"):
        p.add_argument(k)
    p.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    {"prep": cmd_prep, "peak": cmd_peak, "hf": cmd_hf, "ftrun-result": cmd_ftrun_result, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main(sys.argv[1:])
