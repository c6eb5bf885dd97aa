#!/usr/bin/env python3
"""tests/reference/hf_train_ref.py: LoRA training steps with the REAL transformers and PEFT,
the way HF Trainer runs them, as the reference for ftrun's bf16 modes (issue 13).

Run with build/pyref/bin/python (tests/reference/requirements.txt pins the packages).

  hf_train_ref.py --model DIR --adapter START_ADAPTER_DIR --data DATA.json --out OUT.json
                  [--dtype float32|bfloat16] [--autocast] [--grad-accum G] [--lr LR]
                  [--weight-decay W] [--warmup-steps N] [--max-grad-norm C]
                  [--loraplus-lr-ratio R] [--neftune-alpha A --neftune-seed S [--neftune-world W]]

- The base is loaded with AutoModelForCausalLM.from_pretrained(DIR, torch_dtype=DTYPE,
  attn_implementation="eager") (native classes only), then wrapped by PEFT from the start
  adapter (PeftModel.from_pretrained, is_trainable=True). PEFT >= 0.12 keeps the adapter in
  fp32 on a bf16 base (autocast_adapter_dtype).
- Each optimizer step takes G micro-batches of DATA ({"batches": [{input_ids, attention_mask,
  labels}]}, right padding; tests/parity/reference_io.h's format). The loss is HF's with
  num_items_in_batch (transformers >= 4.46): the sum of the shifted token cross-entropies over
  all G micro-batches divided by their label-token count. With --autocast the forward and the
  loss run under torch.autocast("cpu", torch.bfloat16), as HF Trainer does for `bf16: true`
  on CPU; backward outside it.
- torch.nn.utils.clip_grad_norm_, torch.optim.AdamW (HF defaults: betas 0.9/0.999, eps 1e-8;
  LoRA weights all decay), and get_linear_schedule_with_warmup's formula on LambdaLR.
- --loraplus-lr-ratio R (LoRA+): the optimizer is PEFT's own create_loraplus_optimizer(model,
  torch.optim.AdamW, lr=LR, loraplus_lr_ratio=R, loraplus_weight_decay=W, ...): lora_B (and
  1-D) tensors in groups with lr LR * R. loraplus_weight_decay is passed as W, so every group
  decays with the training weight decay as in LLaMA-Factory (PEFT's own default would be 0).
- --neftune-alpha A: HF's own transformers.trainer_utils.neftune_post_forward_hook on the input
  embeddings (module.neftune_noise_alpha = A). To draw the noise ftrun draws, the hook is
  wrapped: right before it, the default CPU generator is reseeded (torch.manual_seed) with the
  seed ftrun's dedicated generator uses for that forward, splitmix64 over (S, step, micro-batch,
  rank) as runtime/trainer.h's neftune_seed (written out again below), and its previous state
  is restored after it (so dropout's stream is untouched, as in ftrun). --neftune-world W
  emulates W data-parallel ranks: micro-batch j of a step is rank j % W's micro-batch j // W.
Writes {"loss_per_step", "grad_norm_per_step", "lr_per_step"} to OUT, plus "use_dora" and
"trainable_tensors" (what PEFT built from the start adapter's config: a DoRA adapter trains
lora_magnitude_vector too).
"""
import argparse
import json
import sys


def linear_with_warmup(step, warmup, total):
    """transformers' get_linear_schedule_with_warmup lr_lambda (transformers.optimization needs
    torch >= 2.0's LRScheduler to import, so its one-line formula is written out here)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


MASK64 = (1 << 64) - 1


def neftune_seed(seed, step, micro, rank):
    """runtime/trainer.h neftune_seed: splitmix64's finaliser chained over the four values."""
    def mix(x):
        x = (x + 0x9E3779B97F4A7C15) & MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
        return x ^ (x >> 31)
    h = mix(seed & MASK64)
    for v in (step, micro, rank):
        h = mix(h ^ (v & MASK64))
    return h >> 1


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--autocast", action="store_true")
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--loraplus-lr-ratio", type=float, default=0.0)
    ap.add_argument("--neftune-alpha", type=float, default=0.0)
    ap.add_argument("--neftune-seed", type=int, default=42)
    ap.add_argument("--neftune-world", type=int, default=1)
    a = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, a.adapter, is_trainable=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.float32 for p in params), "PEFT should keep the adapter in fp32"

    batches = json.load(open(a.data))["batches"]
    steps = len(batches) // a.grad_accum
    if a.loraplus_lr_ratio > 0:
        # peft.optimizers imports transformers.trainer_pt_utils, which imports torch >= 2.0's name
        # LRScheduler; Debian's torch 1.13 calls the same base class _LRScheduler (only the name
        # is aliased; neither is used by create_loraplus_optimizer).
        import torch.optim.lr_scheduler as lrs
        if not hasattr(lrs, "LRScheduler"):
            lrs.LRScheduler = lrs._LRScheduler
        from peft.optimizers import create_loraplus_optimizer
        opt = create_loraplus_optimizer(model, torch.optim.AdamW, lr=a.lr, loraplus_lr_ratio=a.loraplus_lr_ratio,
                                        loraplus_weight_decay=a.weight_decay, betas=(0.9, 0.999), eps=1e-8,
                                        weight_decay=a.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    where = {"step": 0, "micro": 0}
    if a.neftune_alpha > 0:
        from transformers.trainer_utils import neftune_post_forward_hook
        embeddings = model.get_input_embeddings()
        embeddings.neftune_noise_alpha = a.neftune_alpha

        def reseeded_neftune(module, inputs, output):
            j = where["micro"]
            saved = torch.get_rng_state()
            torch.manual_seed(neftune_seed(a.neftune_seed, where["step"], j // a.neftune_world, j % a.neftune_world))
            out = neftune_post_forward_hook(module, inputs, output)
            torch.set_rng_state(saved)
            return out

        embeddings.register_forward_hook(reseeded_neftune)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: linear_with_warmup(step, a.warmup_steps, steps))
    out = {"loss_per_step": [], "grad_norm_per_step": [], "lr_per_step": [],
           "use_dora": bool(getattr(model.peft_config["default"], "use_dora", False)),
           "trainable_tensors": len(params)}
    for s in range(steps):
        micro = batches[s * a.grad_accum:(s + 1) * a.grad_accum]
        tensors = [{k: torch.tensor(b[k], dtype=torch.long) for k in ("input_ids", "attention_mask", "labels")}
                   for b in micro]
        n_items = sum(int((t["labels"][:, 1:] != -100).sum()) for t in tensors)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for j, t in enumerate(tensors):
            where["step"], where["micro"] = s, j
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast):
                logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
                logits = logits.float()
                loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), t["labels"][:, 1:].reshape(-1),
                                       ignore_index=-100, reduction="sum") / n_items
            loss.backward()
            total += float(loss)
        norm = torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm if a.max_grad_norm > 0 else float("inf"))
        out["lr_per_step"].append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        out["loss_per_step"].append(total)
        out["grad_norm_per_step"].append(float(norm))
    json.dump(out, open(a.out, "w"))
    print(json.dumps({"steps": steps, "first": out["loss_per_step"][0], "last": out["loss_per_step"][-1]}))


if __name__ == "__main__":
    sys.exit(main())
