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
      it writes `adapter.<i>`, the logits through PEFT. Prints a JSON summary on stdout.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REQ = os.path.join(HERE, "requirements.txt")
FIX = "run `bash .ci/install-pyref` from the repository root (README: Tests)"


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
                        "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules)})
    save_file(tensors, args.out)
    print(json.dumps(summary))
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
    p.set_defaults(func=cmd_logits)
    args = ap.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
