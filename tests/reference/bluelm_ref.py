#!/usr/bin/env python3
"""tests/reference/bluelm_ref.py: BlueLM's reference, from the REAL transformers LlamaForCausalLM.

BlueLM (vivo-ai-lab/BlueLM, model_type "BlueLM") has no native transformers class: its hub
repos ship remote code (modeling_bluelm.py). That code is LLaMA's math plus two things, so this
reference is transformers' own LlamaForCausalLM (transformers 4.49 in build/pyref, the venv of
.ci/install-pyref; run it with build/pyref/bin/python) with exactly those two added here:
  - use_stable_embedding (BlueLMConfig default true): modeling_bluelm.py's
    `embed_layer_norm = nn.LayerNorm(hidden_size, eps=config.rms_norm_eps)` applied to
    embed_tokens' output, done by a forward hook on embed_tokens with
    torch.nn.functional.layer_norm and the checkpoint's model.embed_layer_norm.{weight,bias};
  - rope_scaling {"type": "ntkmixed", "factor": k, "power": b} (BlueLM-7B-Chat-32K): vivo's
    NTKMixedScalingRotaryEmbedding (example/vllm/vllm/model_executor/layers/rotary_embedding.py),
    inv_freq[j] = (1 / theta^(2j/d)) / exp(a * (j+1)^b) with a = ln(int(k)) / (d/2)^b; the
    rotary module's inv_freq buffer is replaced by it (positions are not rescaled).
Every other checkpoint tensor must load into the Llama model name for name (strict), so a
misnamed or extra tensor fails here. No ftrun code is used.

Subcommand:

  logits --model DIR --data DATA.json --out FILE.safetensors [--adapter ADAPTER_DIR]
      Writes F32 `base.<i>` = logits [B, T, V] of micro-batch i of DATA (the format of
      tests/parity/reference_io.h, as hf_ref.py logits) and F32 `inv_freq` (the rotary
      frequencies used). With --adapter: PEFT's PeftModel.from_pretrained on that model, the
      adapter checked key for key as hf_ref.py does, and `adapter.<i>` = logits through PEFT.
      Prints a JSON summary.
"""
import argparse
import glob
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_ref import DEFAULT_REQ, FIX, check_adapter_keys, forward_all, load_batches, pin_problems  # noqa: E402


def fail(msg):
    print("bluelm_ref: " + msg, file=sys.stderr)
    sys.exit(1)


def ntkmixed_inv_freq(theta, dim, factor, power):
    """vivo's NTKMixedScalingRotaryEmbedding: fp32 frequencies, `a` in Python float."""
    import torch

    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    a = math.log(int(factor)) / ((dim / 2) ** power)
    return inv / torch.exp(a * torch.arange(1, dim // 2 + 1, dtype=torch.int64).float() ** power)


def load_state(model_dir):
    from safetensors.torch import load_file

    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        fail(f"{model_dir} has no .safetensors file")
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def build(model_dir):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    if c.get("model_type") != "BlueLM":
        fail(f"{model_dir}: model_type {c.get('model_type')!r}, expected 'BlueLM'")
    if c.get("hidden_act", "silu") != "silu":
        fail(f"hidden_act {c['hidden_act']!r}: BlueLM is SiLU only")
    heads = c["num_attention_heads"]
    cfg = LlamaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"], num_attention_heads=heads,
        num_key_value_heads=c.get("num_key_value_heads") or heads,
        max_position_embeddings=c.get("max_position_embeddings", 2048), rms_norm_eps=c.get("rms_norm_eps", 1e-6),
        rope_theta=c.get("rope_theta", 10000.0), rope_scaling=None,
        tie_word_embeddings=c.get("tie_word_embeddings", False), attention_bias=False, mlp_bias=False,
        pad_token_id=c.get("pad_token_id"), bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"))
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)

    state = {k: v.to(torch.float32) for k, v in load_state(model_dir).items() if "rotary_emb.inv_freq" not in k}
    stable = c.get("use_stable_embedding", True)
    ln_w, ln_b = state.pop("model.embed_layer_norm.weight", None), state.pop("model.embed_layer_norm.bias", None)
    if stable and (ln_w is None or ln_b is None):
        fail("use_stable_embedding is true but model.embed_layer_norm.weight/bias are not in the checkpoint")
    if not stable and (ln_w is not None or ln_b is not None):
        fail("use_stable_embedding is false but the checkpoint has model.embed_layer_norm")
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        fail(f"checkpoint vs LlamaForCausalLM: missing {missing[:6]}, unexpected {unexpected[:6]}")
    if stable:
        eps = float(c.get("rms_norm_eps", 1e-6))  # modeling_bluelm.py: LayerNorm(eps=config.rms_norm_eps)
        h = c["hidden_size"]

        def hook(module, inputs, output):
            return torch.nn.functional.layer_norm(output, (h,), ln_w.to(output.dtype), ln_b.to(output.dtype), eps)

        model.model.embed_tokens.register_forward_hook(hook)

    rs = c.get("rope_scaling")
    rotary = model.model.rotary_emb
    if rs is not None:
        if set(rs) != {"type", "factor", "power"} or rs["type"] != "ntkmixed":
            fail(f"rope_scaling {rs}: only {{type: ntkmixed, factor, power}} is BlueLM's")
        inv = ntkmixed_inv_freq(cfg.rope_theta, cfg.hidden_size // heads, rs["factor"], rs["power"])
        if inv.shape != rotary.inv_freq.shape:
            fail(f"inv_freq shape {tuple(inv.shape)} vs the model's {tuple(rotary.inv_freq.shape)}")
        rotary.inv_freq = inv
        rotary.original_inv_freq = inv
    model.eval()
    return model, rotary.inv_freq.detach().float().clone()


def cmd_logits(args):
    problems = pin_problems(DEFAULT_REQ)
    if problems:
        fail("; ".join(problems) + ": " + FIX)
    import torch
    import transformers
    from safetensors.torch import save_file

    model, inv_freq = build(args.model)
    batches = load_batches(args.data)
    tensors = {f"base.{i}": t for i, t in enumerate(forward_all(model, batches))}
    tensors["inv_freq"] = inv_freq.contiguous()
    summary = {"class": type(model).__name__, "transformers": transformers.__version__, "torch": torch.__version__,
               "micro_batches": len(batches)}
    if args.adapter:
        import peft
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, args.adapter)
        peft_model.eval()
        keys = check_adapter_keys(peft_model, args.adapter)
        for i, t in enumerate(forward_all(peft_model, batches)):
            if not bool(torch.isfinite(t).all()):
                fail(f"PEFT logits of micro-batch {i} are not finite")
            tensors[f"adapter.{i}"] = t
        cfg = peft_model.peft_config["default"]
        summary.update({"peft": peft.__version__, "adapter_keys": len(keys), "target_modules": sorted(cfg.target_modules)})
    save_file(tensors, args.out)
    print(json.dumps(summary))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("logits")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--adapter")
    args = ap.parse_args()
    return {"logits": cmd_logits}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
