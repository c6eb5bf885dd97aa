#!/usr/bin/env python3
"""bench/train_bench_hf.py: the HF transformers + PEFT side of bench/train_bench.sh; one
training run, timed, in its own process (the driver measures its peak RSS).

Run with build/pyref/bin/python (transformers 4.49, PEFT 0.14 on Debian's torch 1.13; see
tests/reference/requirements.txt).

  train_bench_hf.py --model DIR --data train.jsonl --strategy lora|ptuning|full
                    --mode fp32|autocast|bf16 [--warmup W] [--steps N] [--batch B] [--threads T]
                    [--gradient-checkpointing]

What it does, step for step what HF Trainer does on CPU (without its bookkeeping):
- AutoModelForCausalLM.from_pretrained(DIR, torch_dtype=float32 | bfloat16 (mode bf16),
  attn_implementation="eager": torch 1.13 has no scaled_dot_product_attention) on native
  classes only (LlamaForCausalLM; GlmForCausalLM for the GLM-4 shape).
- lora: PEFT LoraConfig r=8, alpha 16, dropout 0 on all projections (llama: q,k,v,o,gate,up,
  down; glm: q,k,v,o,gate_up,down). ptuning: PEFT PREFIX_TUNING, 16 virtual tokens. full: every
  weight trains; on a bf16-held model the weights, gradients and AdamW state are all bf16 (what
  HF Trainer does without DeepSpeed when the model is loaded in bf16).
- A step: model(input_ids, attention_mask, labels) (the model's own loss, logits upcast to fp32)
  under torch.autocast("cpu", torch.bfloat16) for mode autocast (HF Trainer's bf16: true on CPU),
  backward outside it, clip_grad_norm_(1.0), torch.optim.AdamW (Trainer's default adamw_torch,
  lr 1e-4, weight decay 0), a linear LR schedule, zero_grad(set_to_none=True).
- Batches: B rows of the pre-tokenized JSONL in file order (all rows the same length, no
  padding). Steps after the first W are timed, each from building the batch to zero_grad.
Prints one JSON line: tokens_per_second, timed_steps, trainable_params, losses.
"""
import argparse
import json
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--strategy", choices=["lora", "ptuning", "full"], required=True)
    ap.add_argument("--mode", choices=["fp32", "autocast", "bf16"], required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    a = ap.parse_args(argv)

    import torch
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.mode == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype, attn_implementation="eager")
    if a.gradient_checkpointing:
        # What the seeds do: Trainer's gradient_checkpointing=True plus enable_input_require_grads().
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if a.strategy != "full":
        from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
        if a.strategy == "lora":
            glm = model.config.model_type == "glm"
            targets = (["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"] if glm else
                       ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
            pc = LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.0,
                            target_modules=targets)
        else:
            pc = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=16)
        model = get_peft_model(model, pc)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)

    rows = [json.loads(l) for l in open(a.data) if l.strip()]
    total = a.warmup + a.steps
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, float(total - s) / float(total)))
    losses, secs, tokens = [], [], []
    for step in range(total):
        t0 = time.perf_counter()
        group = [rows[(step * a.batch + k) % len(rows)] for k in range(a.batch)]
        ids = torch.tensor([r["input_ids"] for r in group], dtype=torch.long)
        labels = torch.tensor([r["labels"] for r in group], dtype=torch.long)
        mask = torch.ones_like(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.mode == "autocast"):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        secs.append(time.perf_counter() - t0)
        tokens.append(int(mask.sum()))
    timed = slice(a.warmup, total)
    print(json.dumps({"tokens_per_second": sum(tokens[timed]) / sum(secs[timed]), "timed_steps": a.steps,
                      "trainable_params": n_train, "param_dtype": str(params[0].dtype).replace("torch.", ""),
                      "losses": losses}))


if __name__ == "__main__":
    sys.exit(main())
