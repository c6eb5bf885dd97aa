#!/usr/bin/env python3
"""tests/reference/hf_ref.py: the REAL Hugging Face transformers and PEFT as ftrun's references.

Unlike llama_ref.py / chatglm_ref.py (independent re-implementations), this script only drives
the released packages, pinned in tests/reference/requirements.txt and installed by
.ci/install-pyref into build/pyref (a venv over Debian's python3-torch). Run it with
build/pyref/bin/python; tests/parity/hf_parity_test.cpp does.

Subcommands:

  check-pins [REQUIREMENTS]
      Exit 0 when every `name==version` line of requirements.txt (default: the one beside
      this file) is installed at exactly that version and torch imports; otherwise name what
      differs and exit 1. .ci/install-pyref uses it to skip work; `logits` runs it first so a
      stale venv fails with the command that fixes it.

  logits --model DIR --data DATA.json --out FILE.safetensors [--expect-class NAME]
         [--adapter ADAPTER_DIR]
      Loads DIR with AutoModelForCausalLM.from_pretrained(DIR, torch_dtype=torch.float32)
      (never trust_remote_code: the class must be transformers' native one, --expect-class
      names it) and writes F32 `base.<i>` = logits [B, T, V] of micro-batch i of DATA
      ({"batches": [{"input_ids", "attention_mask"}, ...]}, right padding, the format of
      tests/parity/reference_io.h). With --adapter it then checks ADAPTER_DIR key for key
      against PEFT (PEFT ignores unknown keys silently, so nothing else would notice a
      misnamed tensor): the adapter file's keys must be exactly the keys PEFT's
      get_peft_model_state_dict expects for the config PEFT read, with equal shapes, and
      after PeftModel.from_pretrained every one of them must hold the file's values. Then
      it writes `adapter.<i>`, the logits through PEFT. With --merge also `merged.<i>`, the
      logits of PEFT's merge_and_unload() (DoRA adapters included), and with --merged-out DIR
      that merged model's save_pretrained. Prints a JSON summary on stdout.

  packed --model DIR --data DATA.json --out FILE.safetensors [--expect-class NAME]
         [--adapter ADAPTER_DIR]
      Packing (issue 18) on transformers' own attention: DATA holds packed micro-batches as
      data::collate_packed writes them ({"input_ids", "attention_mask", "labels"}; the mask
      holds each token's 1-based sample index within its row, 0 = padding). From that mask
      alone this script builds the 4D float mask [B, 1, T, T] (0 where query i may attend key
      j: same sample and j <= i; finfo(float32).min elsewhere; a padding query sees only
      itself) and position_ids restarting at 0 per sample, and runs the model (eager
      attention, which in transformers 4.49 uses a 4D mask exactly as given, see
      _prepare_4d_causal_attention_mask_with_cache_position). Writes, for the base model and,
      with --adapter (PEFT, checked key for key as in `logits`), through PEFT, with
      P = base or adapter:
        P.packed.<i>       logits [B, T, V], block-diagonal mask, restarting positions
        P.no_block.<i>     plain causal mask (samples see each other), restarting positions
        P.concat.<i>       plain causal mask, positions 0..T-1 (naive concatenation)
        P.no_restart.<i>   block-diagonal mask, positions 0..T-1
      and P.<variant>_loss.<i>, F64 [1]: HF's causal-LM loss SUM over the labels (the model's
      loss_function, i.e. ForCausalLMLoss's shift, -100 ignored, num_items_in_batch=1).

  make-tiny --model-type TYPE --out DIR [--set KEY=JSON ...] [--seed N] [--expect-class NAME]
      A tiny random model written by transformers itself: AutoConfig.for_model(TYPE, KEY=VALUE
      ...) (VALUE parsed as JSON), AutoModelForCausalLM.from_config in fp32 with
      torch.manual_seed(N), every parameter then moved by N(0, 0.1) noise (HF initialises
      biases to 0 and norms to 1, which would hide a misplaced bias or norm), and
      save_pretrained(DIR, safe_serialization=True). Prints the class and the state_dict's
      names and shapes as JSON.

  dora-init --model DIR --targets NAME[,NAME...] --r R --lora-alpha A --out FILE.safetensors
            [--dtype float32|bfloat16]
      get_peft_model(from_pretrained(DIR, torch_dtype=DTYPE), LoraConfig(use_dora=True, ...))
      and writes every `...lora_magnitude_vector` of get_peft_model_state_dict (PEFT's initial
      DoRA magnitudes, its on-disk names): the reference for ftrun's initialisation.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Each venv has its own pins: build/pyref (.ci/install-pyref, torch 1.13, transformers 4.49) and
# build/pyref2 (.ci/install-pyref2, torch 2.11, transformers 4.51 for Glm4ForCausalLM).
PYREF2 = os.path.basename(os.path.normpath(sys.prefix)) == "pyref2"
DEFAULT_REQ = os.path.join(HERE, "requirements-torch2.txt" if PYREF2 else "requirements.txt")
FIX = "run `bash .ci/install-pyref%s` from the repository root (README: Tests)" % ("2" if PYREF2 else "")


def read_pins(path):
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[name.strip()] = version.strip()
    return pins


def pin_problems(path):
    import importlib.metadata as md

    problems = []
    for name, want in read_pins(path).items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = None
        if have != want:
            problems.append(f"{name}: want {want}, have {have or 'nothing'}")
    try:
        import torch  # noqa: F401  (Debian's python3-torch, through --system-site-packages)
    except ImportError as e:
        problems.append(f"torch does not import ({e}); it comes from Debian's python3-torch")
    return problems


def cmd_check_pins(args):
    problems = pin_problems(args.requirements)
    for p in problems:
        print("hf_ref: " + p, file=sys.stderr)
    if problems:
        print("hf_ref: the pinned references are not installed in " + sys.prefix + ": " + FIX, file=sys.stderr)
        return 1
    print("hf_ref: pins ok in " + sys.prefix)
    return 0


def fail(msg):
    print("hf_ref: " + msg, file=sys.stderr)
    sys.exit(1)


def load_batches(path):
    import torch

    with open(path) as f:
        j = json.load(f)
    out = []
    for b in j["batches"]:
        out.append((torch.tensor(b["input_ids"], dtype=torch.long),
                    torch.tensor(b["attention_mask"], dtype=torch.long)))
    return out


def forward_all(model, batches):
    import torch

    outs = []
    with torch.no_grad():
        for ids, mask in batches:
            outs.append(model(input_ids=ids, attention_mask=mask).logits.float().contiguous())
    return outs


def check_adapter_keys(peft_model, adapter_dir):
    """Key for key: file keys == what PEFT expects, shapes equal, and loaded values equal."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if not os.path.exists(path):
        fail(f"{path} does not exist")
    file_sd = load_file(path)
    # What PEFT would save for the config it read (adapter name stripped): the exact key set
    # that set_peft_model_state_dict maps onto the model.
    expected = get_peft_model_state_dict(peft_model)
    missing = sorted(set(expected) - set(file_sd))
    unknown = sorted(set(file_sd) - set(expected))
    if missing or unknown:
        fail(f"adapter keys differ from PEFT's: {len(missing)} missing {missing[:6]}, "
             f"{len(unknown)} PEFT would ignore {unknown[:6]}")
    for k, t in file_sd.items():
        if tuple(expected[k].shape) != tuple(t.shape):
            fail(f"{k}: shape {tuple(t.shape)} in the file, PEFT expects {tuple(expected[k].shape)}")
        if not torch.equal(expected[k].to(t.dtype), t):
            fail(f"{k}: PEFT's loaded value differs from the file's")
    return sorted(file_sd)


def cmd_logits(args):
    problems = pin_problems(DEFAULT_REQ)
    if problems:
        fail("; ".join(problems) + ": " + FIX)
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    cls = type(model)
    if not cls.__module__.startswith("transformers.models."):
        fail(f"{args.model} loaded as {cls.__module__}.{cls.__name__}, not a native transformers class")
    if args.expect_class and cls.__name__ != args.expect_class:
        fail(f"{args.model} loaded as {cls.__name__}, expected {args.expect_class}")
    batches = load_batches(args.data)
    tensors = {f"base.{i}": t for i, t in enumerate(forward_all(model, batches))}
    summary = {"class": cls.__name__, "transformers": transformers.__version__,
               "torch": torch.__version__, "micro_batches": len(batches)}
    if args.adapter:
        import peft
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, args.adapter)
        peft_model.eval()
        keys = check_adapter_keys(peft_model, args.adapter)
        cfg = peft_model.peft_config["default"]
        for i, t in enumerate(forward_all(peft_model, batches)):
            if not bool(torch.isfinite(t).all()):
                fail(f"PEFT logits of micro-batch {i} are not finite")
            tensors[f"adapter.{i}"] = t
        summary.update({"peft": peft.__version__, "adapter_keys": len(keys),
                        "peft_type": str(cfg.peft_type.value), "r": cfg.r,
                        "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules),
                        "use_dora": bool(getattr(cfg, "use_dora", False))})
        if args.merge:
            merged = peft_model.merge_and_unload()
            if type(merged) is not cls:
                fail(f"merge_and_unload gave {type(merged).__name__}, not {cls.__name__}")
            for i, t in enumerate(forward_all(merged, batches)):
                tensors[f"merged.{i}"] = t
            if args.merged_out:
                merged.save_pretrained(args.merged_out, safe_serialization=True)
            summary["merged"] = True
    save_file(tensors, args.out)
    print(json.dumps(summary))
    return 0


def packed_inputs(mask):
    """4D float mask and position_ids of a packed mask (sample index per token, 0 = padding)."""
    import torch

    b, t = mask.shape
    same = mask[:, :, None] == mask[:, None, :]          # [B, T(query), T(key)]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    real = (mask != 0)[:, :, None]
    allowed = (same & causal & real) | (torch.eye(t, dtype=torch.bool) & ~real)
    neg = torch.finfo(torch.float32).min
    mask4d = torch.zeros(b, 1, t, t, dtype=torch.float32).masked_fill(~allowed[:, None], neg)
    positions = torch.zeros(b, t, dtype=torch.long)
    for r in range(b):
        start = 0
        for j in range(t):
            if j > 0 and int(mask[r, j]) != int(mask[r, j - 1]):
                start = j
            positions[r, j] = j - start if int(mask[r, j]) != 0 else 0
    # Plain causal 4D mask (padding keys hidden), to show the block diagonal matters.
    plain_allowed = (causal[None] & (mask != 0)[:, None, :]) | torch.eye(t, dtype=torch.bool)[None]
    plain4d = torch.zeros(b, 1, t, t, dtype=torch.float32).masked_fill(~plain_allowed[:, None], neg)
    running = torch.arange(t, dtype=torch.long)[None].expand(b, t).contiguous()
    return {"packed": (mask4d, positions), "no_block": (plain4d, positions),
            "concat": (plain4d, running), "no_restart": (mask4d, running)}


def packed_forward(model, batches, prefix, tensors):
    import torch

    with torch.no_grad():
        for i, (ids, mask, labels) in enumerate(batches):
            for name, (mask4d, positions) in packed_inputs(mask).items():
                out = model(input_ids=ids, attention_mask=mask4d, position_ids=positions)
                logits = out.logits.float().contiguous()
                if not bool(torch.isfinite(logits).all()):
                    fail(f"{prefix} {name} logits of micro-batch {i} are not finite")
                # HF's own loss (ForCausalLMLoss: shift, ignore_index -100), as a sum.
                inner = model.get_base_model() if hasattr(model, "get_base_model") else model
                loss = inner.loss_function(logits=logits, labels=labels,
                                           vocab_size=logits.shape[-1], num_items_in_batch=1)
                tensors[f"{prefix}.{name}.{i}"] = logits
                tensors[f"{prefix}.{name}_loss.{i}"] = loss.double().reshape(1).contiguous()


def cmd_packed(args):
    problems = pin_problems(DEFAULT_REQ)
    if problems:
        fail("; ".join(problems) + ": " + FIX)
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    cls = type(model)
    if not cls.__module__.startswith("transformers.models."):
        fail(f"{args.model} loaded as {cls.__module__}.{cls.__name__}, not a native transformers class")
    if args.expect_class and cls.__name__ != args.expect_class:
        fail(f"{args.model} loaded as {cls.__name__}, expected {args.expect_class}")
    if model.config._attn_implementation != "eager":
        fail(f"attention is {model.config._attn_implementation}, not eager")
    with open(args.data) as f:
        j = json.load(f)
    batches = [(torch.tensor(b["input_ids"], dtype=torch.long), torch.tensor(b["attention_mask"], dtype=torch.long),
                torch.tensor(b["labels"], dtype=torch.long)) for b in j["batches"]]
    # The 4D mask must reach the attention exactly as given (4.49: _update_causal_mask ->
    # _prepare_4d_causal_attention_mask_with_cache_position passes a 4D mask through, with no
    # causal mask combined into it), or the comparison would test transformers' own masking.
    for ids, mask, _ in batches:
        mask4d = packed_inputs(mask)["packed"][0]
        embeds = model.get_input_embeddings()(ids)
        seen = model.model._update_causal_mask(mask4d, embeds, torch.arange(ids.shape[1]), None, False)
        if seen is None or not torch.equal(seen, mask4d):
            fail("transformers does not use the 4D attention mask as given")
    tensors = {}
    packed_forward(model, batches, "base", tensors)
    summary = {"class": cls.__name__, "transformers": transformers.__version__,
               "torch": torch.__version__, "micro_batches": len(batches)}
    if args.adapter:
        import peft
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, args.adapter)
        peft_model.eval()
        keys = check_adapter_keys(peft_model, args.adapter)
        packed_forward(peft_model, batches, "adapter", tensors)
        summary.update({"peft": peft.__version__, "adapter_keys": len(keys)})
    save_file(tensors, args.out)
    print(json.dumps(summary))
    return 0


def cmd_dora_init(args):
    problems = pin_problems(DEFAULT_REQ)
    if problems:
        fail("; ".join(problems) + ": " + FIX)
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=dtype, attn_implementation="eager")
    cfg = LoraConfig(r=args.r, lora_alpha=args.lora_alpha, lora_dropout=0.0, use_dora=True,
                     target_modules=args.targets.split(","), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    sd = get_peft_model_state_dict(peft_model)
    mags = {k: v.detach().contiguous() for k, v in sd.items() if k.endswith(".lora_magnitude_vector")}
    if not mags:
        fail("PEFT made no lora_magnitude_vector")
    save_file(mags, args.out)
    print(json.dumps({"magnitudes": len(mags), "dtype": str(next(iter(mags.values())).dtype)}))
    return 0


def cmd_make_tiny(args):
    problems = pin_problems(DEFAULT_REQ)
    if problems:
        fail("; ".join(problems) + ": " + FIX)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    overrides = {}
    for kv in args.set or []:
        key, _, value = kv.partition("=")
        overrides[key] = json.loads(value)
    config = AutoConfig.for_model(args.model_type, **overrides)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    cls = type(model)
    if args.expect_class and cls.__name__ != args.expect_class:
        fail(f"{args.model_type} built {cls.__name__}, expected {args.expect_class}")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(args.out, safe_serialization=True)
    print(json.dumps({"class": cls.__name__,
                      "tensors": {k: list(v.shape) for k, v in model.state_dict().items()}}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check-pins")
    p.add_argument("requirements", nargs="?", default=DEFAULT_REQ)
    p.set_defaults(func=cmd_check_pins)
    p = sub.add_parser("logits")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--expect-class")
    p.add_argument("--adapter")
    p.add_argument("--merge", action="store_true")
    p.add_argument("--merged-out")
    p.set_defaults(func=cmd_logits)
    p = sub.add_parser("packed")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--expect-class")
    p.add_argument("--adapter")
    p.set_defaults(func=cmd_packed)
    p = sub.add_parser("make-tiny")
    p.add_argument("--model-type", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--expect-class")
    p.set_defaults(func=cmd_make_tiny)
    p = sub.add_parser("dora-init")
    p.add_argument("--model", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--r", type=int, required=True)
    p.add_argument("--lora-alpha", type=float, required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_dora_init)
    args = ap.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
