#!/usr/bin/env python3
"""Independent fp32 reference for ftrun's Llama/Qwen2 + LoRA numerics.

Written from scratch for ftrun's parity test; it imports no ftrun code and no HF code
(transformers/peft/safetensors are not installable here). Dependencies: python3 stdlib,
torch (Debian python3-torch 1.13.1 is enough) and numpy.

What it is held to: HF transformers' LlamaForCausalLM / Qwen2ForCausalLM forward, HF Trainer's
LoRA training step and PEFT's LoRA layers/on-disk format, computed in fp32 on CPU. The formulas
below were read from the public sources and re-implemented; each part names the HF/PEFT function
it follows.

  Model forward  (transformers/models/llama/modeling_llama.py; qwen2 is the same graph)
    LlamaRMSNorm.forward       y = weight * (x * rsqrt(mean(x^2, -1) + eps)), computed in fp32
    _compute_default_rope_parameters (modeling_rope_utils.py)
                               inv_freq = 1 / theta ** (arange(0, d, 2).float() / d)  (fp32)
    _compute_llama3_parameters wavelen = 2*pi/inv_freq; wavelen < L/high: unchanged;
                               wavelen > L/low: inv_freq/factor; otherwise
                               s = (L/wavelen - low)/(high - low),
                               inv_freq = (1-s)*inv_freq/factor + s*inv_freq
                               (L = rope_scaling.original_max_position_embeddings)
    _compute_linear_scaling_rope_parameters  inv_freq / factor   (also accepted)
    LlamaRotaryEmbedding.forward  freqs = inv_freq (x) position_ids, emb = cat(freqs, freqs),
                               cos/sin * attention_scaling (1.0 for default/llama3/linear);
                               position_ids = arange(T) (what HF uses when none are passed,
                               i.e. cache_position; right padding leaves it unchanged)
    rotate_half / apply_rotary_pos_emb  q*cos + rotate_half(q)*sin, rotate_half(x)=cat(-x2, x1)
    repeat_kv                  kv head j serves query heads j*n_rep .. j*n_rep+n_rep-1
    eager_attention_forward    softmax(q k^T * head_dim**-0.5 + mask, dim=-1, dtype=fp32) v
    causal/padding mask        (LlamaModel._update_causal_mask / masking_utils): additive 4-D
                               mask, 0 where key j <= query i and attention_mask[b, j] == 1,
                               torch.finfo(float32).min elsewhere
    LlamaMLP.forward           down(silu(gate(x)) * up(x))
    LlamaDecoderLayer.forward  h = h + attn(input_layernorm(h)); h = h + mlp(post_attention_layernorm(h))
    LlamaForCausalLM.forward   logits = lm_head(norm(h)); lm_head = embed_tokens when
                               tie_word_embeddings. No embedding scaling.
    Qwen2Attention             q/k/v_proj have bias, o_proj none. Llama: all four get bias iff
                               attention_bias; MLP gets bias iff mlp_bias.
  Loss  (transformers/loss/loss_utils.py ForCausalLMLoss + fixed_cross_entropy)
    logits.float(); labels padded by one -100 on the right and shifted by one (== logits[:, :-1]
    vs labels[:, 1:]); cross_entropy(reduction="sum", ignore_index=-100) / num_items_in_batch.
    Without num_items_in_batch (plain model(**batch)) HF uses reduction="mean".
  num_items_in_batch  (transformers/trainer.py Trainer.get_batch_samples, >= 4.46)
    sum over the grad_accum micro-batches of (labels != -100).sum() -- the UNSHIFTED label count
    (it includes each row's first label, which never enters the loss). --num-items shifted
    counts labels[:, 1:] instead. Trainer.training_step does not divide by grad_accum when the
    model accepts loss kwargs (Llama/PEFT do); the logged step loss is the sum of the
    micro-batch losses.
  Optimizer / schedule / clipping  (Trainer defaults, optim="adamw_torch")
    torch.optim.AdamW(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay) on every LoRA weight
    (Trainer's decay group holds all non-bias, non-norm weights: all lora_A/lora_B);
    transformers.optimization.get_linear_schedule_with_warmup via torch LambdaLR:
      lambda(s) = s / max(1, warmup)                          if s < warmup
                  max(0, (total - s) / max(1, total - warmup)) otherwise
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm) (returns the pre-clip total L2 norm;
    skipped when max_grad_norm <= 0). Per step: backward each micro-batch, clip, optimizer.step,
    scheduler.step, zero_grad. The lr recorded for step s is the lr that step used.
  LoRA  (peft/tuners/lora/layer.py LoraLayer.update_layer / reset_lora_parameters / Linear.forward)
    lora_A: [r, in] kaiming_uniform_(a=sqrt(5)) (= U(-1/sqrt(in), 1/sqrt(in))); lora_B: [out, r]
    zeros (here optionally small random with --nonzero-b); scaling = lora_alpha / r;
    y = base_layer(x) + lora_B(lora_A(dropout(x))) * scaling. dropout must be 0 here.
  On-disk formats
    config.json                PretrainedConfig.to_json_file: json indent=2, sort_keys, "\n"
    model.safetensors          safetensors serialize: u64 LE header length N, JSON header with
                               "__metadata__" first then tensors sorted by (dtype desc, name),
                               {"dtype","shape","data_offsets"}, compact separators, header
                               padded with spaces to a multiple of 8, data back to back
    adapter_config.json        peft LoraConfig.save_pretrained (indent=2, sort_keys)
    adapter_model.safetensors  names base_model.model.<module path>.lora_A.weight / lora_B.weight

Subcommands: make, data, run, selftest (see README.md next to this file, or --help).
"""

import argparse
import json
import math
import os
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:  # e.g. a pyenv python3 first on PATH: retry with the system interpreter
    _sys_py = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(_sys_py) and os.path.exists(_sys_py) \
            and not os.environ.get("LLAMA_REF_REEXEC"):
        os.environ["LLAMA_REF_REEXEC"] = "1"
        os.execv(_sys_py, [_sys_py] + sys.argv)
    raise

FMT_VERSION = "ftrun-llama-ref/1"
TRANSFORMERS_VERSION = "4.46.3"
PEFT_VERSION = "0.13.2"
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ALL_MODULES = ATTN_MODULES + MLP_MODULES

# ----------------------------------------------------------------------------------------------
# safetensors (own writer/reader)
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {  # name -> (numpy dtype, itemsize, rank used for the reference writer's sort)
    "F64": (np.dtype("<f8"), 8, 11), "F32": (np.dtype("<f4"), 4, 10), "F16": (np.dtype("<f2"), 2, 8),
    "BF16": (None, 2, 9), "I64": (np.dtype("<i8"), 8, 7), "I32": (np.dtype("<i4"), 4, 5),
}
_TORCH_TO_ST = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
                torch.int64: "I64", torch.int32: "I32", torch.bfloat16: "BF16"}


def st_save(path, tensors, metadata=None):
    """Write {name: torch.Tensor} as safetensors, byte-compatible with the reference writer."""
    if metadata is None:
        metadata = {"format": "pt"}
    items = []
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        dt = _TORCH_TO_ST[t.dtype]
        if dt == "BF16":
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(_ST_DTYPES[dt][0]).tobytes()
        items.append((name, dt, list(t.shape), raw))
    # reference order: higher dtype first (alignment), then name
    items.sort(key=lambda it: (-_ST_DTYPES[it[1]][2], it[0]))
    header_parts = []
    if metadata:
        header_parts.append('"__metadata__":' + json.dumps(metadata, separators=(",", ":")))
    off = 0
    for name, dt, shape, raw in items:
        entry = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        header_parts.append(json.dumps(name) + ":" + json.dumps(entry, separators=(",", ":")))
        off += len(raw)
    header = ("{" + ",".join(header_parts) + "}").encode("utf-8")
    header += b" " * ((8 - len(header) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for _, _, _, raw in items:
            f.write(raw)
    os.replace(tmp, path)


def st_read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"{path}: header too large")
        header = f.read(n)
    return n, json.loads(header.decode("utf-8"))


def st_load(path):
    """Read a safetensors file into {name: fp32/int torch.Tensor}; validates the layout."""
    n, hdr = st_read_header(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(8 + n)
        data = f.read()
    out = {}
    spans = []
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        b, e = info["data_offsets"]
        numel = int(np.prod(info["shape"])) if info["shape"] else 1
        if e - b != numel * _ST_DTYPES[dt][1]:
            raise ValueError(f"{path}: {name}: size mismatch")
        spans.append((b, e))
        raw = data[b:e]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_ST_DTYPES[dt][0])
        arr = arr.reshape(info["shape"]).copy()
        if arr.dtype == np.float64 or arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        out[name] = torch.from_numpy(arr)
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError(f"{path}: tensors do not tile the data buffer")
        pos = e
    if 8 + n + pos != size:
        raise ValueError(f"{path}: file size {size} != {8 + n + pos}")
    return out


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------

class Cfg:
    """The subset of LlamaConfig/Qwen2Config the forward needs, read from config.json."""

    def __init__(self, d):
        self.raw = d
        self.model_type = d.get("model_type", "llama")
        if self.model_type not in ("llama", "qwen2"):
            raise ValueError(f"unsupported model_type {self.model_type}")
        self.vocab = int(d["vocab_size"])
        self.hidden = int(d["hidden_size"])
        self.inter = int(d["intermediate_size"])
        self.layers = int(d["num_hidden_layers"])
        self.heads = int(d["num_attention_heads"])
        self.kv_heads = int(d.get("num_key_value_heads") or self.heads)
        self.head_dim = int(d.get("head_dim") or self.hidden // self.heads)
        self.eps = float(d.get("rms_norm_eps", 1e-6))
        self.theta = float(d.get("rope_theta", 10000.0))
        self.rope_scaling = d.get("rope_scaling")
        self.tie = bool(d.get("tie_word_embeddings", False))
        if self.model_type == "qwen2":
            self.qkv_bias, self.o_bias, self.mlp_bias = True, False, False
        else:
            ab = bool(d.get("attention_bias", False))
            self.qkv_bias, self.o_bias, self.mlp_bias = ab, ab, bool(d.get("mlp_bias", False))
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError("only hidden_act silu is supported")
        if self.heads % self.kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    def linear_shapes(self):
        """module name -> (in_features, out_features, has_bias)"""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q, self.qkv_bias), "k_proj": (self.hidden, kv, self.qkv_bias),
            "v_proj": (self.hidden, kv, self.qkv_bias), "o_proj": (q, self.hidden, self.o_bias),
            "gate_proj": (self.hidden, self.inter, self.mlp_bias),
            "up_proj": (self.hidden, self.inter, self.mlp_bias),
            "down_proj": (self.inter, self.hidden, self.mlp_bias),
        }


def module_path(layer, mod):
    return f"model.layers.{layer}.{'self_attn' if mod in ATTN_MODULES else 'mlp'}.{mod}"


def load_model(model_dir):
    """What transformers' from_pretrained reads: config.json, then model.safetensors or, when
    absent, model.safetensors.index.json's weight_map (every name from the shard it names).
    Missing or unexpected weights are errors here (transformers would initialise missing ones
    at random and warn about unexpected ones)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Cfg(json.load(f))
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        w = st_load(single)
    else:
        with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
            index = json.load(f)
        assert "total_size" in index.get("metadata", {}), "index without metadata.total_size"
        w, shards = {}, {}
        for name, shard in index["weight_map"].items():
            if shard not in shards:
                shards[shard] = st_load(os.path.join(model_dir, shard))
            assert name in shards[shard], f"{name} is not in {shard}, where the index puts it"
            w[name] = shards[shard][name]
        listed = set(index["weight_map"])
        for shard, tensors in shards.items():
            extra = set(tensors) - listed
            assert not extra, f"{shard} holds tensors the index does not list: {sorted(extra)[:3]}"
    expected = set(random_weights(cfg, 0))
    missing, unexpected = expected - set(w), set(w) - expected
    assert not missing and not unexpected, f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
    w = {k: v.float() for k, v in w.items()}
    return cfg, w


# ----------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------

def rope_inv_freq(cfg):
    """Returns (inv_freq fp32 [head_dim/2], attention_scaling)."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = cfg.rope_scaling
    if rs is None:
        return inv_freq, 1.0
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / float(rs["factor"]), 1.0
    if kind == "llama3":
        return llama3_scale(inv_freq, float(rs["factor"]), float(rs["low_freq_factor"]),
                            float(rs["high_freq_factor"]),
                            rs["original_max_position_embeddings"]), 1.0
    raise ValueError(f"unsupported rope_scaling type {kind}")


def llama3_scale(inv_freq, factor, low_ff, high_ff, old_ctx):
    low_wl = old_ctx / low_ff
    high_wl = old_ctx / high_ff
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wl, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(cfg, T):
    inv_freq, att = rope_inv_freq(cfg)
    pos = torch.arange(T, dtype=torch.int64)[None, :].float()           # [1, T]
    freqs = (inv_freq[None, :, None].float() @ pos[:, None, :]).transpose(1, 2)  # [1, T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * att, emb.sin() * att                               # [1, T, d]


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    x32 = x.to(torch.float32)
    var = x32.pow(2).mean(-1, keepdim=True)
    return weight * (x32 * torch.rsqrt(var + eps)).to(x.dtype)


def additive_mask(attention_mask, T):
    """[B, 1, T, T] fp32: 0 where attended, finfo.min where masked (causal + padding)."""
    B = attention_mask.shape[0]
    neg = torch.finfo(torch.float32).min
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None, None, :, :] & (attention_mask[:, None, None, :] != 0)
    m = torch.zeros(B, 1, T, T, dtype=torch.float32)
    return m.masked_fill(~allowed, neg)


def repeat_kv(x, n_rep):
    b, h, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


class Lora:
    """LoRA weights keyed by module path ("model.layers.0.self_attn.q_proj") -> (A, B).
    `modules` (in named_parameters() order) and `path` (layer, module -> path) default to the
    Llama family's; chatglm_ref passes its own."""

    def __init__(self, r, alpha, targets, weights, modules=None, path=None):
        self.r, self.alpha, self.targets = r, alpha, list(targets)
        self.scaling = alpha / r
        self.w = weights  # dict path -> [A, B]
        self.modules = modules if modules is not None else ALL_MODULES
        self.path = path if path is not None else module_path

    def params(self, cfg):
        """In HF named_parameters() order (layer, q,k,v,o,gate,up,down; A then B)."""
        out = []
        for layer in range(cfg.layers):
            for mod in self.modules:
                p = self.path(layer, mod)
                if p in self.w:
                    out.extend(self.w[p])
        return out

    def state_dict(self):
        d = {}
        for p, (a, b) in self.w.items():
            d[f"base_model.model.{p}.lora_A.weight"] = a
            d[f"base_model.model.{p}.lora_B.weight"] = b
        return d


def linear(x, w, path, lora):
    """PEFT >= 0.12's LoRA Linear: the input cast to the adapter's dtype (fp32), the sum taken
    in the promoted dtype and cast back to the base result's dtype (a no-op in fp32)."""
    y = F.linear(x, w[path + ".weight"], w.get(path + ".bias"))
    if lora is not None and path in lora.w:
        a, b = lora.w[path]
        dt = y.dtype
        y = (y + F.linear(F.linear(x.to(a.dtype), a), b) * lora.scaling).to(dt)
    return y


def attention_core(q, k, v, mask):
    """q [B,H,T,D], k/v [B,H,T,D] (already repeated), mask [B,1,T,T] -> [B,H,T,D]."""
    scale = q.shape[-1] ** -0.5
    s = torch.matmul(q, k.transpose(2, 3)) * scale + mask
    p = F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(p, v)


def forward(cfg, w, input_ids, attention_mask, lora=None, attn_impl=None):
    """Returns fp32 logits [B, T, V] (LlamaForCausalLM.forward math)."""
    B, T = input_ids.shape
    H, KV, D = cfg.heads, cfg.kv_heads, cfg.head_dim
    h = F.embedding(input_ids, w["model.embed_tokens.weight"])
    cos, sin = rope_cos_sin(cfg, T)
    cos, sin = cos[:, None], sin[:, None]  # unsqueeze_dim=1 -> [1, 1, T, D]
    mask = additive_mask(attention_mask, T)
    for i in range(cfg.layers):
        pre = f"model.layers.{i}"
        res = h
        x = rms_norm(h, w[pre + ".input_layernorm.weight"], cfg.eps)
        q = linear(x, w, pre + ".self_attn.q_proj", lora).view(B, T, H, D).transpose(1, 2)
        k = linear(x, w, pre + ".self_attn.k_proj", lora).view(B, T, KV, D).transpose(1, 2)
        v = linear(x, w, pre + ".self_attn.v_proj", lora).view(B, T, KV, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if attn_impl is None:
            o = attention_core(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV), mask)
        else:
            o = attn_impl(q, k, v, attention_mask)
        o = o.transpose(1, 2).reshape(B, T, H * D)
        h = res + linear(o, w, pre + ".self_attn.o_proj", lora)
        res = h
        x = rms_norm(h, w[pre + ".post_attention_layernorm.weight"], cfg.eps)
        g = linear(x, w, pre + ".mlp.gate_proj", lora)
        u = linear(x, w, pre + ".mlp.up_proj", lora)
        h = res + linear(F.silu(g) * u, w, pre + ".mlp.down_proj", lora)
    h = rms_norm(h, w["model.norm.weight"], cfg.eps)
    head = w["model.embed_tokens.weight"] if cfg.tie else w["lm_head.weight"]
    return F.linear(h, head).float()


def causal_lm_loss_sum(logits, labels):
    """Sum of token CE over shifted labels (ForCausalLMLoss with reduction='sum')."""
    V = logits.shape[-1]
    lab = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
    return F.cross_entropy(logits.float().reshape(-1, V), lab.reshape(-1), ignore_index=-100,
                           reduction="sum")


def count_items(labels, mode):
    if mode == "hf":
        return int((labels != -100).sum())
    if mode == "shifted":
        return int((labels[:, 1:] != -100).sum())
    raise ValueError(mode)


# ----------------------------------------------------------------------------------------------
# make
# ----------------------------------------------------------------------------------------------

def build_config(a):
    mt = a.model_type
    head_dim = a.head_dim or a.hidden // a.heads
    if a.rope_scaling == "llama3":
        rope_scaling = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                        "original_max_position_embeddings": a.orig_max_pos, "rope_type": "llama3"}
    else:
        rope_scaling = None
    theta = a.rope_theta if a.rope_theta is not None else (
        500000.0 if a.rope_scaling == "llama3" else (1000000.0 if mt == "qwen2" else 10000.0))
    max_pos = a.max_pos or (131072 if a.rope_scaling == "llama3" else 2048)
    eps = a.eps if a.eps is not None else (1e-6 if mt == "qwen2" else 1e-5)
    c = {
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": a.hidden,
        "initializer_range": 0.02,
        "intermediate_size": a.inter,
        "max_position_embeddings": max_pos,
        "model_type": mt,
        "num_attention_heads": a.heads,
        "num_hidden_layers": a.layers,
        "num_key_value_heads": a.kv_heads,
        "pad_token_id": 0,
        "rms_norm_eps": eps,
        "rope_scaling": rope_scaling,
        "rope_theta": theta,
        "tie_word_embeddings": bool(a.tie),
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": a.vocab,
    }
    if mt == "llama":
        c.update({"architectures": ["LlamaForCausalLM"], "attention_bias": bool(a.attention_bias),
                  "head_dim": head_dim, "mlp_bias": bool(a.mlp_bias), "pretraining_tp": 1})
    else:
        if a.attention_bias or a.mlp_bias:
            raise SystemExit("--attention-bias/--mlp-bias are llama options (qwen2 has fixed biases)")
        if head_dim != a.hidden // a.heads:
            raise SystemExit("qwen2: head_dim is hidden/heads")
        c.update({"architectures": ["Qwen2ForCausalLM"], "max_window_layers": a.layers,
                  "sliding_window": max_pos, "use_sliding_window": False})
    return c


def random_weights(cfg, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    # a tied embedding doubles as lm_head: scale it so logits stay O(1) (fp32 tolerances)
    emb_std = 1.0 / math.sqrt(cfg.hidden) if cfg.tie else 1.0
    w = {"model.embed_tokens.weight": randn(cfg.vocab, cfg.hidden) * emb_std}
    shapes = cfg.linear_shapes()
    for i in range(cfg.layers):
        w[f"model.layers.{i}.input_layernorm.weight"] = 1.0 + 0.1 * randn(cfg.hidden)
        for mod in ALL_MODULES:
            fin, fout, bias = shapes[mod]
            p = module_path(i, mod)
            w[p + ".weight"] = randn(fout, fin) * (scale / math.sqrt(fin))
            if bias:
                w[p + ".bias"] = 0.1 * randn(fout)
        w[f"model.layers.{i}.post_attention_layernorm.weight"] = 1.0 + 0.1 * randn(cfg.hidden)
    w["model.norm.weight"] = 1.0 + 0.1 * randn(cfg.hidden)
    if not cfg.tie:
        w["lm_head.weight"] = randn(cfg.vocab, cfg.hidden) * (scale / math.sqrt(cfg.hidden))
    return w


def write_json(path, obj):
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def cmd_make(a):
    c = build_config(a)
    cfg = Cfg(c)
    os.makedirs(a.out, exist_ok=True)
    write_json(os.path.join(a.out, "config.json"), c)
    write_json(os.path.join(a.out, "generation_config.json"),
               {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                "transformers_version": TRANSFORMERS_VERSION})
    st_save(os.path.join(a.out, "model.safetensors"), random_weights(cfg, a.seed, a.init_scale))
    print(os.path.abspath(a.out))


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

def cmd_data(a):
    """Random right-padded micro-batches: labels = input_ids where mask==1 (after an optional
    -100 prompt prefix), -100 on padding."""
    rng = np.random.RandomState(a.seed)
    batches = []
    for _ in range(a.micro_batches):
        ids, mask, labels = [], [], []
        for row in range(a.batch):
            n = a.seq if row == 0 else int(rng.randint(max(2, a.seq // 2), a.seq + 1))
            toks = [int(t) for t in rng.randint(3, a.vocab, size=n)]
            ids.append(toks + [a.pad_id] * (a.seq - n))
            mask.append([1] * n + [0] * (a.seq - n))
            lab = [(-100 if j < a.prompt_len else t) for j, t in enumerate(toks)]
            labels.append(lab + [-100] * (a.seq - n))
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    write_json(a.out, {"batches": batches})
    print(os.path.abspath(a.out))


def load_batches(path):
    with open(path) as f:
        d = json.load(f)
    if isinstance(d, dict) and "batches" in d:
        d = d["batches"]
    if isinstance(d, dict):
        d = [d]
    out = []
    for b in d:
        ids = torch.tensor(b["input_ids"], dtype=torch.int64)
        mask = torch.tensor(b.get("attention_mask", [[1] * ids.shape[1]] * ids.shape[0]),
                            dtype=torch.int64)
        labels = torch.tensor(b["labels"], dtype=torch.int64) if "labels" in b else ids.masked_fill(
            mask == 0, -100)
        if ids.shape != mask.shape or ids.shape != labels.shape:
            raise ValueError("input_ids/attention_mask/labels shapes differ")
        out.append((ids, mask, labels))
    return out


# ----------------------------------------------------------------------------------------------
# LoRA adapter (PEFT way) + I/O
# ----------------------------------------------------------------------------------------------

def expand_targets(targets, modules=None):
    modules = modules if modules is not None else ALL_MODULES
    if isinstance(targets, str):
        targets = [t for t in targets.split(",") if t]
    if targets == ["all-linear"]:  # PEFT's all-linear leaves the output layer out
        return list(modules)
    for t in targets:
        if t not in modules:
            raise ValueError(f"unsupported target module {t}")
    return [t for t in modules if t in targets]


def make_lora(cfg, r, alpha, targets, seed, nonzero_b, modules=None, path=None):
    """PEFT init in module order: A kaiming_uniform_(a=sqrt(5)) on [r, in], B zeros [out, r].
    `modules`/`path` as for Lora (default: the Llama family's)."""
    modules = modules if modules is not None else ALL_MODULES
    path = path if path is not None else module_path
    torch.manual_seed(seed)
    shapes = cfg.linear_shapes()
    w = {}
    for i in range(cfg.layers):
        for mod in modules:
            if mod not in targets:
                continue
            fin, fout, _ = shapes[mod]
            a = torch.empty(r, fin, dtype=torch.float32)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            w[path(i, mod)] = [a, torch.zeros(fout, r, dtype=torch.float32)]
    if nonzero_b:
        g = torch.Generator().manual_seed(seed + 1)
        for p in w:
            w[p][1] = 0.05 * torch.randn(w[p][1].shape, generator=g, dtype=torch.float32)
    return Lora(r, alpha, targets, w, modules, path)


def adapter_config(lora, dropout, base):
    return {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": lora.alpha,
        "lora_dropout": dropout, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "r": lora.r, "rank_pattern": {},
        "revision": None, "target_modules": sorted(lora.targets), "task_type": "CAUSAL_LM",
        "use_dora": False, "use_rslora": False,
    }


def save_adapter(dirpath, lora, dropout, base):
    os.makedirs(dirpath, exist_ok=True)
    write_json(os.path.join(dirpath, "adapter_config.json"), adapter_config(lora, dropout, base))
    path = os.path.join(dirpath, "adapter_model.safetensors")
    st_save(path, lora.state_dict())
    return path


def load_adapter(dirpath, cfg=None, modules=None, path=None):
    with open(os.path.join(dirpath, "adapter_config.json")) as f:
        ac = json.load(f)
    if ac.get("use_rslora") or ac.get("use_dora") or ac.get("fan_in_fan_out"):
        raise ValueError("rslora/dora/fan_in_fan_out adapters are not supported")
    sd = st_load(os.path.join(dirpath, "adapter_model.safetensors"))
    w = {}
    for k, v in sd.items():
        pre, suf = "base_model.model.", None
        for s in (".lora_A.weight", ".lora_B.weight"):
            if k.endswith(s):
                suf = s
        if not k.startswith(pre) or suf is None:
            raise ValueError(f"unexpected adapter tensor {k}")
        p = k[len(pre):-len(suf)]
        w.setdefault(p, [None, None])[0 if suf == ".lora_A.weight" else 1] = v.float()
    modules = modules if modules is not None else ALL_MODULES
    targets = sorted({p.rsplit(".", 1)[1] for p in w}, key=modules.index)
    lora = Lora(int(ac["r"]), ac["lora_alpha"], targets, w, modules, path)
    return lora, float(ac.get("lora_dropout", 0.0))


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------

def linear_schedule(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return f


def train(cfg, w, lora, batches, steps, grad_accum, lr, weight_decay, warmup, total,
          max_grad_norm, num_items_mode, betas=(0.9, 0.999), eps=1e-8, forward_fn=None):
    """HF Trainer's step (AdamW, LambdaLR linear schedule, clipping). `forward_fn(ids, mask)`
    gives the logits (default: this family's forward with `lora`)."""
    if forward_fn is None:
        forward_fn = lambda ids, mask: forward(cfg, w, ids, mask, lora)  # noqa: E731
    params = lora.params(cfg)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(warmup, total))
    hist = {"loss_per_step": [], "grad_norm_per_step": [], "lr_per_step": [],
            "num_items_per_step": [], "micro_loss_per_step": []}
    for s in range(steps):
        micro = batches[s * grad_accum:(s + 1) * grad_accum]
        n_items = sum(count_items(lab, num_items_mode) for _, _, lab in micro)
        hist["lr_per_step"].append(opt.param_groups[0]["lr"])
        step_loss = None
        micro_losses = []
        for ids, mask, lab in micro:
            logits = forward_fn(ids, mask)
            loss = causal_lm_loss_sum(logits, lab) / torch.tensor(n_items)
            loss.backward()
            d = loss.detach()
            micro_losses.append(float(d))
            step_loss = d if step_loss is None else step_loss + d
        if max_grad_norm is not None and max_grad_norm > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        else:
            gn = torch.norm(torch.stack([torch.norm(p.grad.detach(), 2.0) for p in params]), 2.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        hist["loss_per_step"].append(float(step_loss))
        hist["grad_norm_per_step"].append(float(gn))
        hist["num_items_per_step"].append(n_items)
        hist["micro_loss_per_step"].append(micro_losses)
    for p in params:
        p.requires_grad_(False)
    return hist


def mean_loss(logits, labels):
    n = int((F.pad(labels, (0, 1), value=-100)[..., 1:] != -100).sum())
    return float(causal_lm_loss_sum(logits, labels) / max(n, 1))


def cmd_run(a):
    torch.set_num_threads(a.threads)
    cfg, w = load_model(a.model)
    batches = load_batches(a.data)
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    base_name = os.path.abspath(a.model)
    if a.start_adapter:
        lora, dropout = load_adapter(a.start_adapter, cfg)
    else:
        if a.dropout != 0.0:
            raise SystemExit("only lora dropout 0 can be matched deterministically")
        lora = make_lora(cfg, a.r, a.alpha, expand_targets(a.target_modules), a.seed, a.nonzero_b)
        dropout = a.dropout
    start_dir = os.path.join(out, "start_adapter")
    save_adapter(start_dir, lora, dropout, base_name)

    with torch.no_grad():
        lb = [forward(cfg, w, ids, m) for ids, m, _ in batches]
        la = [forward(cfg, w, ids, m, lora) for ids, m, _ in batches]
    steps = a.steps if a.steps is not None else len(batches) // a.grad_accum
    if steps * a.grad_accum > len(batches):
        raise SystemExit(f"{steps} steps x grad_accum {a.grad_accum} > {len(batches)} micro-batches")
    total = a.total_steps if a.total_steps is not None else steps
    hist = train(cfg, w, lora, batches, steps, a.grad_accum, a.lr, a.weight_decay, a.warmup_steps,
                 total, a.max_grad_norm, a.num_items)
    final_dir = os.path.join(out, "final_adapter")
    final_path = save_adapter(final_dir, lora, dropout, base_name)
    with torch.no_grad():
        lf = [forward(cfg, w, ids, m, lora) for ids, m, _ in batches]

    logit_tensors = {}
    for i in range(len(batches)):
        logit_tensors[f"logits_base.{i}"] = lb[i]
        logit_tensors[f"logits_adapter.{i}"] = la[i]
        logit_tensors[f"logits_final.{i}"] = lf[i]
    logits_file = os.path.join(out, "logits.safetensors")
    st_save(logits_file, logit_tensors)

    golden = {
        "format": FMT_VERSION,
        "model_dir": base_name,
        "data": os.path.abspath(a.data),
        "model": {"model_type": cfg.model_type, "vocab_size": cfg.vocab, "hidden_size": cfg.hidden,
                  "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
                  "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
                  "tie_word_embeddings": cfg.tie, "rope_scaling": cfg.rope_scaling},
        "hparams": {"r": lora.r, "lora_alpha": lora.alpha, "scaling": lora.scaling,
                    "lora_dropout": dropout, "target_modules": lora.targets,
                    "seed": a.seed, "nonzero_b": bool(a.nonzero_b) and not a.start_adapter,
                    "lr": a.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": a.weight_decay,
                    "warmup_steps": a.warmup_steps, "total_steps": total, "steps": steps,
                    "max_grad_norm": a.max_grad_norm, "grad_accum": a.grad_accum,
                    "num_items": a.num_items},
        "start_adapter": start_dir,
        "final_adapter": final_path,
        "final_adapter_dir": final_dir,
        "logits_file": logits_file,
        "num_micro_batches": len(batches),
        "logits_base": [t.tolist() for t in lb],
        "logits_adapter": [t.tolist() for t in la],
        "logits_final": [t.tolist() for t in lf],
        "loss_base": [mean_loss(lb[i], batches[i][2]) for i in range(len(batches))],
        "loss_adapter": [mean_loss(la[i], batches[i][2]) for i in range(len(batches))],
        "loss_final": [mean_loss(lf[i], batches[i][2]) for i in range(len(batches))],
    }
    golden.update(hist)
    gpath = os.path.join(out, "golden.json")
    with open(gpath, "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print(gpath)


def cmd_logits(a):
    ids = torch.tensor([[int(t) for t in a.ids.split(",")]])
    mask = torch.ones_like(ids)
    cfg, w = load_model(a.model)
    lora = load_adapter(a.adapter, cfg)[0] if a.adapter else None
    cfg2, w2 = load_model(a.other)
    with torch.no_grad():
        x = forward(cfg, w, ids, mask, lora)
        y = forward(cfg2, w2, ids, mask)
    print(json.dumps({"max_abs_diff": (x - y).abs().max().item(), "max_abs": x.abs().max().item()}))


# ----------------------------------------------------------------------------------------------
# selftest
# ----------------------------------------------------------------------------------------------

def _tiny_args(**kw):
    d = dict(vocab=97, hidden=32, layers=2, heads=4, kv_heads=2, inter=48, head_dim=None,
             rope_scaling="none", rope_theta=None, max_pos=None, orig_max_pos=8192, eps=None,
             model_type="llama", tie=False, attention_bias=False, mlp_bias=False)
    d.update(kw)
    return argparse.Namespace(**d)


def _loop_attention(q, k, v, attention_mask):
    """Per-(batch, head, query) loops; kv head = h // n_rep; masked keys are dropped instead of
    added as -inf; softmax written out via exp/sum."""
    B, H, T, D = q.shape
    n_rep = H // k.shape[1]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            kh = h // n_rep
            for i in range(T):
                keys = [j for j in range(i + 1) if attention_mask[b, j] != 0]
                sc = torch.stack([(q[b, h, i] * k[b, kh, j]).sum() / math.sqrt(D) for j in keys])
                e = torch.exp(sc - sc.max())
                pr = e / e.sum()
                out[b, h, i] = sum(pr[n] * v[b, kh, j] for n, j in enumerate(keys))
    return out


def cmd_selftest(a):
    import tempfile
    torch.set_num_threads(1)
    fails = []

    def check(name, ok, detail=""):
        print(("PASS " if ok else "FAIL ") + name + (f"  ({detail})" if detail else ""))
        if not ok:
            fails.append(name)

    ids = torch.tensor([[5, 17, 33, 2, 90, 41, 7, 64], [11, 3, 8, 70, 25, 0, 0, 0]])
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    labels = ids.masked_fill(mask == 0, -100)

    with tempfile.TemporaryDirectory() as td:
        # 1. safetensors round trip + layout
        cfg = Cfg(build_config(_tiny_args()))
        w = random_weights(cfg, 0)
        p = os.path.join(td, "m.safetensors")
        st_save(p, w)
        back = st_load(p)
        n, hdr = st_read_header(p)
        names = [k for k in hdr if k != "__metadata__"]
        ok = (set(back) == set(w) and all(torch.equal(back[k], w[k]) for k in w)
              and list(hdr)[0] == "__metadata__" and hdr["__metadata__"] == {"format": "pt"}
              and names == sorted(names) and (8 + n) % 8 == 0)
        offs = [hdr[k]["data_offsets"] for k in names]
        ok = ok and offs[0][0] == 0 and all(offs[i][1] == offs[i + 1][0] for i in range(len(offs) - 1))
        with open(p, "rb") as f:
            raw = f.read()
        ok = ok and raw[8:8 + n].decode().startswith('{"__metadata__":{"format":"pt"},"')
        check("safetensors round trip, sorted names, 8-aligned space-padded header", ok)

        # 2. make -> load model dir
        md = os.path.join(td, "model")
        cmd_make(argparse.Namespace(**vars(_tiny_args(rope_scaling="llama3")), seed=3, out=md,
                                    init_scale=1.0))
        cfg3, w3 = load_model(md)
        with open(os.path.join(md, "config.json")) as f:
            c = json.load(f)
        need = {"architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
                "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
                "attention_bias", "mlp_bias", "tie_word_embeddings", "hidden_act",
                "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
                "transformers_version"}
        check("make writes config.json keys and loadable model.safetensors",
              need <= set(c) and cfg3.rope_scaling["rope_type"] == "llama3"
              and "lm_head.weight" in w3 and len(w3) == 2 + 9 * 2 + 1)

        # 3. llama3 RoPE scaling
        inv, _ = rope_inv_freq(Cfg(dict(c, rope_scaling=None)))
        inv3, _ = rope_inv_freq(cfg3)
        wl = 2 * math.pi / inv
        hi = wl < 8192 / 4.0
        lo = wl > 8192 / 1.0
        med = ~hi & ~lo
        ok = (torch.equal(inv3[hi], inv[hi]) and torch.equal(inv3[lo], inv[lo] / 8.0)
              and bool(hi.any()) and bool(lo.any()) and bool(med.any())
              and bool(((inv3[med] < inv[med]) & (inv3[med] > inv[med] / 8.0)).all()))
        check("llama3 rope: high freq unchanged, low freq / factor, medium in between", ok,
              f"inv={inv.tolist()} scaled={inv3.tolist()}")

        # 4. rotate_half RoPE == explicit rotation of pairs (i, i + d/2)
        T, D = 6, cfg.head_dim
        inv, _ = rope_inv_freq(cfg)
        x = torch.randn(1, 1, T, D, generator=torch.Generator().manual_seed(1))
        cos, sin = rope_cos_sin(cfg, T)
        y = x * cos[:, None] + rotate_half(x) * sin[:, None]
        y2 = torch.empty_like(x)
        for t in range(T):
            for i in range(D // 2):
                ang = t * float(inv[i])
                c_, s_ = math.cos(ang), math.sin(ang)
                x1, x2 = float(x[0, 0, t, i]), float(x[0, 0, t, i + D // 2])
                y2[0, 0, t, i] = x1 * c_ - x2 * s_
                y2[0, 0, t, i + D // 2] = x2 * c_ + x1 * s_
        check("rope rotate_half == explicit pair rotation", torch.allclose(y, y2, atol=1e-5),
              f"max diff {float((y - y2).abs().max()):.2e}")

        # 5. RMSNorm vs float64 numpy
        xs = torch.randn(3, 32, generator=torch.Generator().manual_seed(2)) * 3
        wt = w["model.layers.0.input_layernorm.weight"]
        ref = xs.double().numpy() / np.sqrt((xs.double().numpy() ** 2).mean(-1, keepdims=True)
                                             + cfg.eps) * wt.double().numpy()
        got = rms_norm(xs, wt, cfg.eps)
        check("rmsnorm == float64 formula", np.allclose(got.numpy(), ref, atol=1e-5, rtol=1e-5))

        # 6. attention: MHA (kv == heads) and GQA vs explicit per-head loops
        for kvh in (4, 2, 1):
            cfgk = Cfg(build_config(_tiny_args(kv_heads=kvh)))
            wk = random_weights(cfgk, 7)
            l1 = forward(cfgk, wk, ids, mask)
            l2 = forward(cfgk, wk, ids, mask, attn_impl=_loop_attention)
            valid = mask.bool()
            d = float((l1 - l2)[valid].abs().max())
            check(f"attention heads=4 kv_heads={kvh}: repeat_kv path == per-head loops", d < 1e-5,
                  f"max diff {d:.2e}")

        # 7. right padding does not change the logits of real tokens
        l_full = forward(cfg, w, ids, mask)
        l_row = forward(cfg, w, ids[1:, :5], mask[1:, :5])
        d = float((l_full[1, :5] - l_row[0]).abs().max())
        check("right padding leaves real-token logits unchanged", d < 1e-5, f"max diff {d:.2e}")

        # 8. LoRA: B = 0 -> logits identical; nonzero B == merged weight
        lora0 = make_lora(cfg, 4, 8, list(ALL_MODULES), 0, False)
        la = forward(cfg, w, ids, mask, lora0)
        check("B=0 adapter logits == base logits exactly", torch.equal(la, l_full))
        lora1 = make_lora(cfg, 4, 8, ["q_proj", "v_proj", "down_proj"], 0, True)
        merged = dict(w)
        for pth, (A, Bm) in lora1.w.items():
            merged[pth + ".weight"] = w[pth + ".weight"] + (Bm @ A) * lora1.scaling
        l1 = forward(cfg, w, ids, mask, lora1)
        l2 = forward(cfg, merged, ids, mask)
        d = float((l1 - l2).abs().max())
        check("nonzero-B adapter == merged W + s*B@A", d < 1e-4 and not torch.equal(l1, l_full),
              f"max diff {d:.2e}")
        bound = 1.0 / math.sqrt(cfg.hidden)
        A0 = lora0.w["model.layers.0.self_attn.q_proj"][0]
        check("lora_A kaiming_uniform(a=sqrt5) bound 1/sqrt(in)",
              float(A0.abs().max()) <= bound and float(A0.abs().max()) > 0.5 * bound)

        # 9. adapter save/load round trip in PEFT naming
        ad = os.path.join(td, "adapter")
        save_adapter(ad, lora1, 0.0, md)
        lr_, _ = load_adapter(ad, cfg)
        ok = all(torch.equal(lr_.w[k][0], lora1.w[k][0]) and torch.equal(lr_.w[k][1], lora1.w[k][1])
                 for k in lora1.w) and lr_.targets == lora1.targets and set(lr_.w) == set(lora1.w)
        _, hdr = st_read_header(os.path.join(ad, "adapter_model.safetensors"))
        ok = ok and "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in hdr
        check("adapter save/load round trip (PEFT names)", ok)

        # 10. loss: sum CE / N == manual log-softmax; grad accumulation == one big batch
        lg = forward(cfg, w, ids, mask)
        man = 0.0
        for b in range(2):
            for t in range(7):
                if labels[b, t + 1] != -100:
                    man -= float(torch.log_softmax(lg[b, t].double(), -1)[labels[b, t + 1]])
        got = float(causal_lm_loss_sum(lg, labels))
        check("shifted CE sum == manual", abs(got - man) < 1e-4 * abs(man), f"{got} vs {man}")

        def grads_for(micro, n_items):
            l = make_lora(cfg, 4, 8, ["q_proj", "v_proj"], 0, True)
            ps = l.params(cfg)
            for q in ps:
                q.requires_grad_(True)
            tot = 0.0
            for i_, m_, lab_ in micro:
                loss = causal_lm_loss_sum(forward(cfg, w, i_, m_, l), lab_) / n_items
                loss.backward()
                tot += float(loss)
            return tot, [q.grad.clone() for q in ps]

        n_all = count_items(labels, "hf")
        t1, g1 = grads_for([(ids, mask, labels)], n_all)
        t2, g2 = grads_for([(ids[:1], mask[:1], labels[:1]), (ids[1:], mask[1:], labels[1:])], n_all)
        d = max(float((x - y).abs().max()) for x, y in zip(g1, g2))
        check("grad accumulation (sum/N_total) == single batch", abs(t1 - t2) < 1e-6 and d < 1e-6,
              f"loss {t1} vs {t2}, grad diff {d:.2e}")

        # 11. LR schedule
        f = linear_schedule(2, 5)
        check("linear schedule with warmup", [f(s) for s in range(6)] ==
              [0.0, 0.5, 1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0])

        # 11b. AdamW step and clipping, written out by hand (the formulas ftrun must follow)
        gen = torch.Generator().manual_seed(9)
        p0 = torch.randn(5, 3, generator=gen)
        grads = [torch.randn(5, 3, generator=gen) * 3 for _ in range(3)]
        pt = p0.clone().requires_grad_(True)
        opt = torch.optim.AdamW([pt], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
        ph, m_, v_ = p0.double().clone(), torch.zeros(5, 3).double(), torch.zeros(5, 3).double()
        ok = True
        for k_, gr in enumerate(grads, 1):
            pt.grad = gr.clone()
            gnorm = torch.nn.utils.clip_grad_norm_([pt], 1.0)
            opt.step()
            g64 = gr.double()
            tn = float(g64.norm())
            g64 = g64 * min(1.0, 1.0 / (tn + 1e-6))       # clip_coef = max/(norm+1e-6), <= 1
            ph = ph * (1 - 0.01 * 0.1)                       # decoupled weight decay first
            m_ = 0.9 * m_ + 0.1 * g64
            v_ = 0.999 * v_ + 0.001 * g64 * g64
            den = (v_.sqrt() / math.sqrt(1 - 0.999 ** k_)) + 1e-8
            ph = ph - (0.01 / (1 - 0.9 ** k_)) * m_ / den
            ok = ok and abs(float(gnorm) - tn) < 1e-5 * tn and tn > 1.0
        d = float((pt.detach().double() - ph).abs().max())
        check("AdamW + clip_grad_norm_ == hand formula", ok and d < 1e-6, f"max diff {d:.2e}")

        # 12. qwen2 flavour: biases present, tied head
        cq = build_config(_tiny_args(model_type="qwen2", tie=True))
        cfgq = Cfg(cq)
        wq = random_weights(cfgq, 4)
        ok = ("model.layers.0.self_attn.q_proj.bias" in wq and "model.layers.0.self_attn.o_proj.bias"
              not in wq and "lm_head.weight" not in wq and "head_dim" not in cq
              and cq["architectures"] == ["Qwen2ForCausalLM"])
        lq = forward(cfgq, wq, ids, mask)
        check("qwen2: q/k/v bias, no o bias, tied lm_head", ok and bool(torch.isfinite(lq).all()))

        # 13. end to end: data + run on the tiny model, deterministic, loss goes down
        dp = os.path.join(td, "data.json")
        cmd_data(argparse.Namespace(seed=0, micro_batches=4, batch=2, seq=8, vocab=97, pad_id=0,
                                    prompt_len=0, out=dp))
        ra = argparse.Namespace(model=md, data=dp, out=os.path.join(td, "run"), r=4, alpha=8,
                                dropout=0.0, target_modules="all-linear", seed=0, nonzero_b=True,
                                lr=1e-2, weight_decay=0.01, warmup_steps=1, total_steps=None,
                                steps=None, max_grad_norm=1.0, grad_accum=2, num_items="hf",
                                start_adapter=None, threads=1)
        cmd_run(ra)
        with open(os.path.join(td, "run", "golden.json")) as fh:
            g = json.load(fh)
        ra.out = os.path.join(td, "run2")
        ra.start_adapter = os.path.join(td, "run", "start_adapter")
        cmd_run(ra)
        with open(os.path.join(td, "run2", "golden.json")) as fh:
            g2 = json.load(fh)
        ok = (g["loss_per_step"] == g2["loss_per_step"] and g["logits_adapter"] == g2["logits_adapter"]
              and len(g["loss_per_step"]) == 2 and g["lr_per_step"] == [0.0, 1e-2]
              and g["logits_base"] != g["logits_adapter"])
        check("run: reproducible from saved start adapter, lr schedule recorded", ok,
              f"loss {g['loss_per_step']} lr {g['lr_per_step']} gn {g['grad_norm_per_step']}")

    print(f"{'FAILED' if fails else 'OK'}: {len(fails)} failure(s)")
    return 1 if fails else 0


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("make", help="write a tiny random HF model directory")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--vocab", type=int, default=97)
    m.add_argument("--hidden", type=int, default=32)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--kv-heads", type=int, default=2)
    m.add_argument("--inter", type=int, default=48)
    m.add_argument("--head-dim", type=int, default=None, help="llama only; default hidden/heads")
    m.add_argument("--rope-scaling", choices=["llama3", "none"], default="none")
    m.add_argument("--rope-theta", type=float, default=None,
                   help="default 500000 (llama3), 1e6 (qwen2), 10000 otherwise")
    m.add_argument("--max-pos", type=int, default=None)
    m.add_argument("--orig-max-pos", type=int, default=8192)
    m.add_argument("--eps", type=float, default=None, help="default 1e-5 llama, 1e-6 qwen2")
    m.add_argument("--model-type", choices=["llama", "qwen2"], default="llama")
    m.add_argument("--tie", action="store_true")
    m.add_argument("--attention-bias", action="store_true")
    m.add_argument("--mlp-bias", action="store_true")
    m.add_argument("--init-scale", type=float, default=1.0,
                   help="linear weights ~ N(0, (scale/sqrt(fan_in))^2)")

    d = sub.add_parser("data", help="write random right-padded micro-batches as JSON")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--micro-batches", type=int, default=4)
    d.add_argument("--batch", type=int, default=2)
    d.add_argument("--seq", type=int, default=8)
    d.add_argument("--vocab", type=int, default=97)
    d.add_argument("--pad-id", type=int, default=0)
    d.add_argument("--prompt-len", type=int, default=0, help="label -100 on the first N tokens")

    r = sub.add_parser("run", help="logits + LoRA training trajectory -> golden.json")
    r.add_argument("--model", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--r", type=int, default=4)
    r.add_argument("--alpha", type=float, default=8)
    r.add_argument("--dropout", type=float, default=0.0)
    r.add_argument("--target-modules", default="q_proj,v_proj",
                   help="comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--nonzero-b", action="store_true")
    r.add_argument("--start-adapter", default=None,
                   help="PEFT adapter dir to start from instead of creating one")
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--weight-decay", type=float, default=0.0)
    r.add_argument("--warmup-steps", type=int, default=0)
    r.add_argument("--steps", type=int, default=None, help="default: micro-batches // grad_accum")
    r.add_argument("--total-steps", type=int, default=None,
                   help="schedule length (num_training_steps); default = --steps")
    r.add_argument("--max-grad-norm", type=float, default=1.0)
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--num-items", choices=["hf", "shifted"], default="hf")
    r.add_argument("--threads", type=int, default=1)

    g = sub.add_parser("logits", help="max |difference| of two models' logits on the same ids")
    g.add_argument("--model", required=True, help="HF model directory (single file or sharded with index)")
    g.add_argument("--adapter", default=None, help="PEFT LoRA adapter applied to --model")
    g.add_argument("--other", required=True, help="the model directory to compare with")
    g.add_argument("--ids", required=True, help="comma-separated token ids")

    sub.add_parser("selftest", help="internal consistency checks")
    a = ap.parse_args(argv)
    if a.cmd == "make":
        cmd_make(a)
    elif a.cmd == "data":
        cmd_data(a)
    elif a.cmd == "logits":
        cmd_logits(a)
    elif a.cmd == "run":
        if a.alpha == int(a.alpha):
            a.alpha = int(a.alpha)
        cmd_run(a)
    else:
        return cmd_selftest(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
