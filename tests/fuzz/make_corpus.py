#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/ (committed; rerun
only to change the seeds). Seeds are small valid files (from configs/ and examples/tiny where
the repository has them) and near-valid ones, each one mutation away from a real error path.
Uses only the standard library."""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def copy(target, name, src):
    with open(os.path.join(ROOT, src), "rb") as f:
        put(target, name, f.read())


# config: the demo's and the tiny configs, --set overrides (after a "# --set" line), near misses.
for src in ["configs/lora.yaml", "configs/ptuning_v2.yaml", "configs/sft.yaml", "configs/tiny/lora.yaml",
            "configs/tiny/glm4-ptuning_v2.yaml"]:
    copy("config", "ok-" + src.replace("/", "-"), src)
with open(os.path.join(ROOT, "configs/tiny/lora.yaml")) as f:
    tiny = f.read()
put("config", "ok-tiny-set.yaml", tiny + "\n# --set\ntraining_args.max_steps=5\npeft_config.r=4\n"
    "training_args.generation_config.max_new_tokens=8\n")
put("config", "bad-set-not-map.yaml", tiny + "\n# --set\nmax_input_length.x=1\n")
put("config", "bad-unknown-key.yaml", "model_dir: m\ntraining_args:\n  max_step: 3\n")
put("config", "bad-type.yaml", "max_input_length: [1, 2]\ntraining_args: {learning_rate: fast}\n")
put("config", "anchors.yaml", "base: &b {max_steps: 2, seed: 1}\ntraining_args: *b\n")
put("config", "flow.yaml", "{model_dir: m, peft_config: {peft_type: LORA, r: 8, target_modules: [q_proj]}, "
    "training_args: {bf16: true, report_to: none, num_train_epochs: 1e30}}\n")

# deepspeed: the two shipped files and variants.
copy("deepspeed", "ok-ds_zero_2.json", "configs/ds_zero_2.json")
copy("deepspeed", "ok-ds_zero_3.json", "configs/ds_zero_3.json")
put("deepspeed", "ok-minimal.json", '{"zero_optimization": {"stage": 1}}')
put("deepspeed", "ok-concrete.json", '{"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1, '
    '"train_batch_size": 16, "gradient_clipping": 1.0, "bf16": {"enabled": false}, '
    '"optimizer": {"type": "AdamW", "params": {"lr": 5e-5}}}')
put("deepspeed", "bad-stage.json", '{"zero_optimization": {"stage": 5}}')
put("deepspeed", "bad-contradicts.json", '{"train_batch_size": 3}')
put("deepspeed", "bad-offload.json", '{"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}')
put("deepspeed", "bad-array.json", "[1, 2]")

# dataset: each record form, in JSON Lines and as a JSON array.
with open(os.path.join(ROOT, "examples/tiny/train.jsonl")) as f:
    put("dataset", "ok-messages.jsonl", "".join(f.readlines()[:3]))
with open(os.path.join(ROOT, "examples/tiny/alpaca.json")) as f:
    put("dataset", "ok-alpaca.json", json.dumps(json.load(f)[:3], indent=1, ensure_ascii=False))
put("dataset", "ok-alpaca-history.jsonl", json.dumps(
    {"instruction": "Add", "input": "2 3", "output": "5", "system": "Be brief.", "history": [["hi", "hello"]]}) + "\n")
put("dataset", "ok-sharegpt.jsonl", json.dumps(
    {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                       {"from": "function_call", "value": '{"name": "f"}'}, {"from": "observation", "value": "1"},
                       {"from": "gpt", "value": "A"}],
     "system": "sys", "tools": '[{"name": "f"}]'}) + "\n")
put("dataset", "ok-tools.jsonl", json.dumps(
    {"messages": [{"role": "system", "content": "", "tools": [{"type": "function", "function": {"name": "f"}}]},
                  {"role": "user", "content": "q"}, {"role": "assistant", "metadata": "f", "content": "{}"},
                  {"role": "observation", "content": "r"}, {"role": "assistant", "content": "a"}]}) + "\n")
put("dataset", "ok-pretokenized.jsonl", '{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}\n\n'
    '{"input_ids": [5], "labels": [5]}\n')
put("dataset", "bad-lengths.jsonl", '{"input_ids": [1, 2, 3], "labels": [1, 2]}\n')
put("dataset", "bad-role.json", '[{"messages": [{"role": "robot", "content": "x"}]}]')
put("dataset", "bad-null.jsonl", '{"instruction": null, "output": "x", "history": null}\n')

# tokenizer_config: the tiny models' files and variants.
for m in ["model", "qwen2-model", "glm4-model", "chatglm3-model"]:
    copy("tokenizer_config", "ok-%s.json" % m, "examples/tiny/%s/tokenizer_config.json" % m)
put("tokenizer_config", "ok-objects.json", json.dumps(
    {"added_tokens_decoder": {"5": {"content": "<x>", "special": False}, "6": {"content": "<y>"}},
     "bos_token": {"content": "<s>"}, "eos_token": "<y>", "pad_token": None, "tokenizer_class": "Qwen2Tokenizer"}))
put("tokenizer_config", "bad-id.json", '{"added_tokens_decoder": {"x": {"content": "a"}}}')
put("tokenizer_config", "bad-eos.json", '{"eos_token": "<missing>"}')


# tokenizer_json: a small byte-level BPE (GPT-2's bytes_to_unicode form, as tests/data/bpe_test.cpp).
def byte_vocab(extra):
    vocab, nxt = {}, 0x100
    for b in range(256):
        printable = 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE
        cp = b if printable else nxt
        if not printable:
            nxt += 1
        vocab[chr(cp)] = b
    for i, t in enumerate(extra):
        vocab[t] = 256 + i
    return vocab


LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_json(extra, merges, added=(), regex=LLAMA3, ignore_merges=False):
    return json.dumps({
        "version": "1.0", "added_tokens": list(added), "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "ignore_merges": ignore_merges,
                  "vocab": byte_vocab(extra), "merges": merges}}, ensure_ascii=False)


G = "\u0120"  # GPT-2's byte for ' '
put("tokenizer_json", "ok-small.json", tokenizer_json(["He", "ll", "Hell", "Hello", G + "w"],
                                                       ["H e", "l l", "He ll", "Hell o", G + " w"]))
put("tokenizer_json", "ok-added.json", tokenizer_json(
    ["ab"], [["a", "b"]], added=[{"id": 257, "content": "<|eot|>", "special": True},
                                 {"id": 258, "content": "<tool>", "special": False}], ignore_merges=True)
    + "\n//tokenizer_config.json\n" + json.dumps({"eos_token": "<|eot|>", "bos_token": None}))
put("tokenizer_json", "ok-qwen2-pattern.json", tokenizer_json(
    ["12"], ["1 2"], regex=r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"))
put("tokenizer_json", "bad-merge.json", tokenizer_json([], ["a zz"]))
put("tokenizer_json", "bad-regex.json", tokenizer_json([], [], regex="(unclosed"))
put("tokenizer_json", "bad-unigram.json", '{"model": {"type": "Unigram"}}')


# safetensors: small files in the reference layout (header padded to 8, tensors back to back).
def safetensors(tensors, metadata=None, header_override=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = header_override if header_override is not None else json.dumps(header, separators=(",", ":"))
    h = h.encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
put("safetensors", "ok-f32.safetensors", safetensors([("w", "F32", [2, 2], f32)], {"format": "pt"}))
put("safetensors", "ok-mixed.safetensors", safetensors([
    ("a.weight", "BF16", [3], struct.pack("<3H", 0x3F80, 0x4000, 0xBF80)),
    ("b.ids", "I64", [2], struct.pack("<2q", 7, -1)), ("c.scalar", "F32", [], struct.pack("<f", 2.0)),
    ("d.empty", "F16", [0, 4], b""), ("e.mask", "BOOL", [2], b"\x01\x00")],
    {"format": "pt", "ftrun_ranges": '{"0": [0, 3]}'}))
put("safetensors", "ok-empty.safetensors", safetensors([]))
put("safetensors", "bad-offsets.safetensors", safetensors([], header_override=
    '{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}') + b"\0" * 12)
put("safetensors", "bad-dtype.safetensors", safetensors([("w", "Q4", [1], b"\0")]))
put("safetensors", "bad-header-len.safetensors", struct.pack("<Q", 1 << 40) + b"{}")

# checkpoint: trainer_state.json as ftrun writes it, then "//layout.json" and the layout.
state = {"global_step": 3, "position": 24, "epoch": 0.5,
         "log_history": [{"step": 1, "loss": 2.1, "learning_rate": 5e-4}], "world_size": 1, "zero_stage": 0,
         "strategy": "lora", "peft_config": {"peft_type": "LORA", "r": 8},
         "model_config": {"model_type": "llama", "hidden_size": 64},
         "training_args": {"max_steps": 60, "learning_rate": 5e-4, "per_device_train_batch_size": 8,
                           "gradient_accumulation_steps": 1, "seed": 42}, "seed": 42}
layout = {"units": [{"unit": 0, "numel": 96, "params": [{"name": "layers.0.q_proj.lora_A.weight", "offset": 0,
                                                         "numel": 64},
                                                        {"name": "layers.0.q_proj.lora_B.weight", "offset": 64,
                                                         "numel": 32}]}]}
SEP = "\n//layout.json\n"
put("checkpoint", "ok-state-layout.json", json.dumps(state, indent=2) + SEP + json.dumps(layout, indent=2))
put("checkpoint", "ok-legacy-state.json", '{"global_step": 3, "position": 0}' + SEP + json.dumps(layout))
put("checkpoint", "bad-units-empty.json", '{"global_step": 3, "position": 0}' + SEP + '{"units": []}')
put("checkpoint", "bad-step.json", json.dumps(dict(state, global_step=9999)) + SEP + json.dumps(layout))
put("checkpoint", "bad-position-type.json", '{"global_step": 3, "position": "x"}')
put("checkpoint", "bad-layout.json", json.dumps(state) + SEP + '{"units": [{"unit": "0"}]}')
put("checkpoint", "bad-empty.json", "")
