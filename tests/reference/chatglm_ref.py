#!/usr/bin/env python3
"""Independent fp32 reference for ftrun's ChatGLM family (ChatGLM3-6B, GLM-4-9B-chat) + LoRA.

Written from scratch for ftrun's chatglm_test; it imports no ftrun code and no THUDM/HF code
(transformers/peft are not installable here). Dependencies: python3 stdlib, torch (Debian
python3-torch 1.13.1 is enough), numpy, and the family-independent parts of llama_ref.py next
to this file (safetensors writer/reader, PEFT LoRA weights and adapter I/O, loss, schedule and
the HF Trainer step), called with this family's module names, paths and forward.

What it is held to: THUDM's modeling_chatglm.py (the remote code of THUDM/chatglm3-6b and
THUDM/glm-4-9b-chat, class ChatGLMForConditionalGeneration) and configuration_chatglm.py,
computed in fp32 on CPU, plus HF Trainer's LoRA step and PEFT's LoRA as in llama_ref.py. The
formulas below were read from those sources and re-implemented; each part names the THUDM
function it follows.

  Config (ChatGLMConfig.__init__ defaults): num_layers 28, padded_vocab_size 65024 (vocab_size
    is set to it), hidden_size 4096, ffn_hidden_size 13696, kv_channels 128,
    num_attention_heads 32, seq_length 2048, layernorm_epsilon 1e-5, rmsnorm True,
    apply_residual_connection_post_layernorm False, post_layer_norm True, add_bias_linear
    False, add_qkv_bias False, multi_query_attention False, multi_query_group_num 1,
    rope_ratio 1 (GLM-4 only; ChatGLM3-6B's file has no such key), apply_query_key_layer_scaling
    True, attention_softmax_in_fp32 True, fp32_residual_connection False, original_rope True.
  Embedding.forward             word_embeddings(input_ids) (padded_vocab_size rows)
  RotaryEmbedding               built with dim = kv_channels // 2 (= rot_dim); forward_impl:
                                base = 10000 * rope_ratio;
                                theta = 1 / base ** (arange(0, dim, 2).float() / dim);
                                idx_theta = outer(arange(seq_length).float(), theta);
                                cache = stack([cos, sin], -1)  -> [seq_length, dim/2, 2];
                                the inv_freq buffer (saved in checkpoints) is never read, and
                                original_impl (= config.original_rope) is stored but unused.
                                ChatGLMModel.forward: cache[position_ids] when position_ids are
                                given, else cache[None, :seq_len].
  apply_rotary_pos_emb          x[..., :rot_dim] viewed as [..., rot_dim/2, 2] pairs (x0, x1):
                                (x0*cos - x1*sin, x1*cos + x0*sin), flattened back;
                                x[..., rot_dim:] passes through (rot_dim = kv_channels/2, so the
                                second half of every head carries no position).
  RMSNorm.forward               variance = x.float().pow(2).mean(-1); x * rsqrt(var + eps);
                                (weight * x).to(input dtype)
  SelfAttention.forward         mixed = query_key_value(x) (bias iff add_bias_linear or
                                add_qkv_bias); multi_query_attention: split
                                [heads*D | groups*D | groups*D] -> q [.., heads, D],
                                k, v [.., groups, D]; else view [.., heads, 3D] and chunk(3)
                                per head. Rotary on q and k. k/v groups expanded: group g
                                serves query heads g*rep .. g*rep+rep-1 (unsqueeze/expand/view).
                                dense(context) (bias iff add_bias_linear).
  CoreAttention (eager)         scores = baddbmm(q, k^T, beta=0, alpha=1/norm_factor),
                                norm_factor = sqrt(D) * coeff, coeff = layer_number (1-based)
                                when apply_query_key_layer_scaling else 1; scores.float() *
                                coeff; masked_fill(mask, -inf) (no mask: causal tril);
                                softmax(-1); bmm with v.
  SdpaAttention (torch >= 2 default; ChatGLM3's CoreAttention uses it too under torch 2):
                                scaled_dot_product_attention(q, k, v, is_causal=True) without a
                                mask, else with ~mask; scale 1/sqrt(D). In fp32 both paths are
                                softmax(q k^T / sqrt(D) + mask) v; `forward` uses that form and
                                the selftest checks the eager form against it.
  ChatGLMPreTrainedModel.get_masks  only when attention_mask is given and not all ones:
                                full = ones(B, T, T).tril() * mask[:, None, :];
                                full -= mask[:, :, None] - 1; masked = full < 0.5
                                -> a real query sees real keys at or before it; a padding query
                                sees every key.
  MLP.forward                   dense_4h_to_h(swiglu(dense_h_to_4h(x))), swiglu(x) =
                                silu(chunk(x, 2)[0]) * chunk(x, 2)[1]  (first half = gate);
                                biases iff add_bias_linear.
  GLMBlock.forward              h = h + attn(input_layernorm(h)); h = h + mlp(post_attention_layernorm(h))
  GLMTransformer / ChatGLMForConditionalGeneration
                                final_layernorm, then output_layer (no bias, separate matrix,
                                padded_vocab_size outputs); the loss is HF's shifted CE.
  Position ids                  the GLM tokenizers' _pad (ChatGLMTokenizer, ChatGLM4Tokenizer)
                                add position_ids = range(n) and pad them with 0 on the padded
                                side; `run` passes those (--positions tokenizer, default), or
                                none (--positions arange: HF's arange default).
  Weight names                  transformer.embedding.word_embeddings.weight,
                                transformer.encoder.layers.N.{input_layernorm.weight,
                                self_attention.query_key_value.{weight,bias},
                                self_attention.dense.weight, post_attention_layernorm.weight,
                                mlp.dense_h_to_4h.weight, mlp.dense_4h_to_h.weight},
                                transformer.encoder.final_layernorm.weight,
                                transformer.output_layer.weight, and the buffer
                                transformer.rotary_pos_emb.inv_freq (written by `make`, as real
                                checkpoints carry it).
  LoRA                          as llama_ref.py (PEFT Linear); module paths
                                transformer.encoder.layers.N.self_attention.{query_key_value,dense},
                                transformer.encoder.layers.N.mlp.{dense_h_to_4h,dense_4h_to_h}.

Subcommands: make, data, run, selftest (mirroring llama_ref.py; see README.md).
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as L  # noqa: E402  (re-executes with /usr/bin/python3 when torch is missing)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

FMT_VERSION = "ftrun-chatglm-ref/1"
ATTN_MODULES = ("query_key_value", "dense")
MLP_MODULES = ("dense_h_to_4h", "dense_4h_to_h")
ALL_MODULES = ATTN_MODULES + MLP_MODULES
INV_FREQ = "transformer.rotary_pos_emb.inv_freq"

# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------

_DEFAULTS = {  # ChatGLMConfig.__init__
    "num_layers": 28, "padded_vocab_size": 65024, "hidden_size": 4096, "ffn_hidden_size": 13696,
    "kv_channels": 128, "num_attention_heads": 32, "seq_length": 2048, "hidden_dropout": 0.0,
    "attention_dropout": 0.0, "layernorm_epsilon": 1e-5, "rmsnorm": True,
    "apply_residual_connection_post_layernorm": False, "post_layer_norm": True,
    "add_bias_linear": False, "add_qkv_bias": False, "bias_dropout_fusion": True,
    "multi_query_attention": False, "multi_query_group_num": 1, "rope_ratio": 1,
    "apply_query_key_layer_scaling": True, "attention_softmax_in_fp32": True,
    "fp32_residual_connection": False, "original_rope": True, "pre_seq_len": None,
    "quantization_bit": 0,
}


class Cfg:
    """What ChatGLMForConditionalGeneration's forward reads from config.json."""

    def __init__(self, d):
        self.raw = d
        if d.get("model_type") != "chatglm":
            raise ValueError(f"model_type must be chatglm, got {d.get('model_type')}")
        g = dict(_DEFAULTS)
        g.update({k: v for k, v in d.items() if v is not None or k == "pre_seq_len"})
        unsupported = {"rmsnorm": True, "apply_residual_connection_post_layernorm": False,
                       "post_layer_norm": True, "fp32_residual_connection": False}
        for k, want in unsupported.items():
            if bool(g[k]) != want:
                raise ValueError(f"{k}={g[k]} is not modelled by this reference")
        if g["pre_seq_len"] is not None or g["quantization_bit"]:
            raise ValueError("pre_seq_len / quantization are not modelled")
        if g["hidden_dropout"] or g["attention_dropout"]:
            raise ValueError("dropout must be 0")
        self.layers = int(g["num_layers"])
        self.vocab = int(g["padded_vocab_size"])
        self.hidden = int(g["hidden_size"])
        self.ffn = int(g["ffn_hidden_size"])
        self.heads = int(g["num_attention_heads"])
        self.head_dim = int(g["kv_channels"] if g["kv_channels"] is not None else self.hidden // self.heads)
        self.mqa = bool(g["multi_query_attention"])
        self.groups = int(g["multi_query_group_num"]) if self.mqa else self.heads
        self.seq_length = int(g["seq_length"])
        self.eps = float(g["layernorm_epsilon"])
        self.rope_ratio = g["rope_ratio"]
        self.qkv_bias = bool(g["add_bias_linear"] or g["add_qkv_bias"])
        self.linear_bias = bool(g["add_bias_linear"])
        self.layer_scaling = bool(g["apply_query_key_layer_scaling"])
        self.rot_dim = self.head_dim // 2
        if self.heads % self.groups:
            raise ValueError("num_attention_heads must be a multiple of multi_query_group_num")

    def qkv_out(self):
        if self.mqa:
            return (self.heads + 2 * self.groups) * self.head_dim
        return 3 * self.heads * self.head_dim

    def linear_shapes(self):
        """module name -> (in_features, out_features, has_bias)"""
        return {
            "query_key_value": (self.hidden, self.qkv_out(), self.qkv_bias),
            "dense": (self.heads * self.head_dim, self.hidden, self.linear_bias),
            "dense_h_to_4h": (self.hidden, 2 * self.ffn, self.linear_bias),
            "dense_4h_to_h": (self.ffn, self.hidden, self.linear_bias),
        }


def module_path(layer, mod):
    return f"transformer.encoder.layers.{layer}.{'self_attention' if mod in ATTN_MODULES else 'mlp'}.{mod}"


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Cfg(json.load(f))
    w = L.st_load(os.path.join(model_dir, "model.safetensors"))
    w = {k: v.float() for k, v in w.items()}
    return cfg, w


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------

def rope_table(cfg, seq_len):
    """RotaryEmbedding(kv_channels // 2).forward_impl: [seq_len, rot_dim/2, 2] (cos, sin)."""
    n_elem = cfg.rot_dim
    base = 10000 * cfg.rope_ratio
    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float) / n_elem))
    seq_idx = torch.arange(seq_len, dtype=torch.float)
    idx_theta = torch.outer(seq_idx, theta).float()
    return torch.stack([torch.cos(idx_theta), torch.sin(idx_theta)], dim=-1)


def rotate(x, cache):
    """x [B, H, T, D]; cache [B or 1, T, rot/2, 2]. GLM pair layout on the first rot dims."""
    B, H, T, D = x.shape
    rot = cache.shape[-2] * 2
    xr, xp = x[..., :rot], x[..., rot:]
    pairs = xr.reshape(B, H, T, rot // 2, 2)
    c = cache[:, None, :T, :, 0]
    s = cache[:, None, :T, :, 1]
    out = torch.stack([pairs[..., 0] * c - pairs[..., 1] * s,
                       pairs[..., 1] * c + pairs[..., 0] * s], dim=-1)
    return torch.cat([out.flatten(3), xp], dim=-1)


def rms_norm(x, weight, eps):
    dt = x.dtype
    var = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(var + eps)
    return (weight * x).to(dt)


def glm_masks(attention_mask):
    """get_masks: [B, 1, T, T] bool, True = masked; None when no padding (plain causal)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    B, T = attention_mask.shape
    pm = attention_mask.to(torch.float32)
    full = torch.ones(B, T, T).tril()
    full = full * pm[:, None, :]
    full = full - (pm[:, :, None] - 1)
    return (full < 0.5)[:, None]


def tokenizer_position_ids(attention_mask):
    """ChatGLMTokenizer._pad: range(n) over the real tokens, 0 on padding (either side)."""
    out = torch.zeros_like(attention_mask, dtype=torch.int64)
    for b in range(attention_mask.shape[0]):
        n = 0
        for t in range(attention_mask.shape[1]):
            if attention_mask[b, t] != 0:
                out[b, t] = n
                n += 1
    return out


def attention_sdpa(q, k, v, masked):
    """softmax(q k^T / sqrt(D) masked) v, what scaled_dot_product_attention computes."""
    T = q.shape[2]
    s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])
    if masked is None:
        masked = ~torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    s = s.masked_fill(masked, float("-inf"))
    return torch.matmul(F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype), v)


def attention_eager(q, k, v, masked, layer_number, layer_scaling):
    """CoreAttention's eager path: baddbmm with alpha = 1/(sqrt(D)*coeff), then * coeff."""
    B, H, T, D = q.shape
    coeff = max(1, layer_number) if layer_scaling else None
    norm = math.sqrt(D) * (coeff or 1)
    qf, kf = q.reshape(B * H, T, D), k.reshape(B * H, T, D)
    buf = torch.empty(B * H, T, T, dtype=q.dtype)
    s = torch.baddbmm(buf, qf, kf.transpose(1, 2), beta=0.0, alpha=1.0 / norm).view(B, H, T, T)
    s = s.float()
    if coeff is not None:
        s = s * coeff
    if masked is None:
        masked = ~torch.ones(B, 1, T, T, dtype=torch.bool).tril()
    s = s.masked_fill(masked, float("-inf"))
    p = F.softmax(s, dim=-1).type_as(v)
    return torch.bmm(p.view(B * H, T, T), v.reshape(B * H, T, D)).view(B, H, T, D)


# LoRA (PEFT Linear) as llama_ref, with this family's module names and paths.
linear = L.linear


def forward(cfg, w, input_ids, attention_mask, lora=None, position_ids=None, eager=False,
            attn_impl=None):
    """fp32 logits [B, T, padded_vocab_size] (ChatGLMForConditionalGeneration.forward)."""
    B, T = input_ids.shape
    H, G, D = cfg.heads, cfg.groups, cfg.head_dim
    if T > cfg.seq_length:
        raise ValueError("sequence longer than seq_length")
    h = F.embedding(input_ids, w["transformer.embedding.word_embeddings.weight"])
    masked = glm_masks(attention_mask)
    table = rope_table(cfg, cfg.seq_length)
    cache = table[position_ids] if position_ids is not None else table[None, :T]
    if h.dtype in (torch.bfloat16, torch.float16):
        # RotaryEmbedding.forward_impl: "mimic complex32" - the table in the weights' dtype
        # when the model was loaded in half precision (not under autocast of fp32 weights).
        cache = cache.to(h.dtype)
    for i in range(cfg.layers):
        pre = f"transformer.encoder.layers.{i}"
        x = rms_norm(h, w[pre + ".input_layernorm.weight"], cfg.eps)
        mixed = linear(x, w, pre + ".self_attention.query_key_value", lora)
        if cfg.mqa:
            q, k, v = mixed.split([H * D, G * D, G * D], dim=-1)
            q, k, v = q.view(B, T, H, D), k.view(B, T, G, D), v.view(B, T, G, D)
        else:
            q, k, v = mixed.view(B, T, H, 3 * D).chunk(3, dim=-1)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = rotate(q, cache), rotate(k, cache)
        if attn_impl is not None:
            o = attn_impl(q, k, v, masked)
        else:
            if G != H:
                rep = H // G
                k = k.unsqueeze(2).expand(B, G, rep, T, D).reshape(B, H, T, D)
                v = v.unsqueeze(2).expand(B, G, rep, T, D).reshape(B, H, T, D)
            if eager:
                o = attention_eager(q, k, v, masked, i + 1, cfg.layer_scaling)
            else:
                o = attention_sdpa(q, k, v, masked)
        o = o.transpose(1, 2).reshape(B, T, H * D)
        h = h + linear(o, w, pre + ".self_attention.dense", lora)
        x = rms_norm(h, w[pre + ".post_attention_layernorm.weight"], cfg.eps)
        gate, up = linear(x, w, pre + ".mlp.dense_h_to_4h", lora).chunk(2, dim=-1)
        h = h + linear(F.silu(gate) * up, w, pre + ".mlp.dense_4h_to_h", lora)
    h = rms_norm(h, w["transformer.encoder.final_layernorm.weight"], cfg.eps)
    return F.linear(h, w["transformer.output_layer.weight"]).float()


# ----------------------------------------------------------------------------------------------
# make
# ----------------------------------------------------------------------------------------------

def build_config(a):
    """config.json with the key set of THUDM/chatglm3-6b or THUDM/glm-4-9b-chat."""
    glm4 = a.flavor == "glm4"
    kv = a.kv_channels or a.hidden // a.heads
    auto_map = {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
                "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
                "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration"}
    if glm4:
        auto_map["AutoModelForSequenceClassification"] = "modeling_chatglm.ChatGLMForSequenceClassification"
    c = {
        "_name_or_path": "THUDM/glm-4-9b-chat" if glm4 else "THUDM/chatglm3-6b",
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": auto_map,
        "add_bias_linear": bool(a.add_bias_linear),
        "add_qkv_bias": not a.no_qkv_bias,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "ffn_hidden_size": a.ffn,
        "fp32_residual_connection": False,
        "hidden_dropout": 0.0,
        "hidden_size": a.hidden,
        "kv_channels": kv,
        "layernorm_epsilon": a.eps if a.eps is not None else (1.5625e-07 if glm4 else 1e-05),
        "multi_query_attention": not a.no_mqa,
        "multi_query_group_num": a.groups,
        "num_attention_heads": a.heads,
        "num_layers": a.layers,
        "original_rope": True,
        "padded_vocab_size": a.vocab,
        "post_layer_norm": True,
        "rmsnorm": True,
        "seq_length": a.seq_length or (131072 if glm4 else 8192),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.44.0" if glm4 else "4.30.2",
        "use_cache": True,
    }
    if glm4:
        c.update({"num_hidden_layers": a.layers,
                  "rope_ratio": a.rope_ratio if a.rope_ratio is not None else 500,
                  "eos_token_id": [2, 3, 4], "pad_token_id": 0})
    else:
        if a.rope_ratio is not None:  # the 32k/128k ChatGLM3 variants carry one
            c["rope_ratio"] = a.rope_ratio
        c.update({"eos_token_id": 2, "pad_token_id": 0})
    return c


def random_weights(cfg, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    w = {"transformer.embedding.word_embeddings.weight": randn(cfg.vocab, cfg.hidden)}
    shapes = cfg.linear_shapes()
    for i in range(cfg.layers):
        pre = f"transformer.encoder.layers.{i}"
        w[pre + ".input_layernorm.weight"] = 1.0 + 0.1 * randn(cfg.hidden)
        for mod in ALL_MODULES:
            fin, fout, bias = shapes[mod]
            p = module_path(i, mod)
            w[p + ".weight"] = randn(fout, fin) * (scale / math.sqrt(fin))
            if bias:
                w[p + ".bias"] = 0.1 * randn(fout)
            if mod == "dense":
                w[pre + ".post_attention_layernorm.weight"] = 1.0 + 0.1 * randn(cfg.hidden)
    w["transformer.encoder.final_layernorm.weight"] = 1.0 + 0.1 * randn(cfg.hidden)
    w["transformer.output_layer.weight"] = randn(cfg.vocab, cfg.hidden) * (scale / math.sqrt(cfg.hidden))
    # RotaryEmbedding.__init__'s buffer (base 10000 whatever rope_ratio; forward ignores it)
    dim = cfg.rot_dim
    w[INV_FREQ] = 1.0 / (10000 ** (torch.arange(0, dim, 2).to(torch.float32) / dim))
    return w


def cmd_make(a):
    c = build_config(a)
    cfg = Cfg(c)
    os.makedirs(a.out, exist_ok=True)
    L.write_json(os.path.join(a.out, "config.json"), c)
    L.write_json(os.path.join(a.out, "generation_config.json"),
                 {"_from_model_config": True, "eos_token_id": c["eos_token_id"], "pad_token_id": 0,
                  "transformers_version": c["transformers_version"]})
    L.st_save(os.path.join(a.out, "model.safetensors"), random_weights(cfg, a.seed, a.init_scale))
    print(os.path.abspath(a.out))


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

def cmd_data(a):
    """Random padded micro-batches (right padding as ftrun's collator, or left padding as the
    GLM tokenizers' _pad): labels = tokens after an optional -100 prompt prefix, -100 on pads."""
    rng = np.random.RandomState(a.seed)
    batches = []
    for _ in range(a.micro_batches):
        ids, mask, labels = [], [], []
        for row in range(a.batch):
            n = a.seq if row == 0 else int(rng.randint(max(2, a.seq // 2), a.seq + 1))
            toks = [int(t) for t in rng.randint(3, a.vocab, size=n)]
            lab = [(-100 if j < a.prompt_len else t) for j, t in enumerate(toks)]
            pad = a.seq - n
            if a.padding_side == "left":
                ids.append([a.pad_id] * pad + toks)
                mask.append([0] * pad + [1] * n)
                labels.append([-100] * pad + lab)
            else:
                ids.append(toks + [a.pad_id] * pad)
                mask.append([1] * n + [0] * pad)
                labels.append(lab + [-100] * pad)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    L.write_json(a.out, {"batches": batches})
    print(os.path.abspath(a.out))


# ----------------------------------------------------------------------------------------------
# LoRA adapter (PEFT way) + I/O
# ----------------------------------------------------------------------------------------------

def expand_targets(targets):
    return L.expand_targets(targets, ALL_MODULES)


def make_lora(cfg, r, alpha, targets, seed, nonzero_b):
    return L.make_lora(cfg, r, alpha, targets, seed, nonzero_b, ALL_MODULES, module_path)


save_adapter = L.save_adapter


def load_adapter(dirpath):
    return L.load_adapter(dirpath, None, ALL_MODULES, module_path)


# ----------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------

def positions_for(mode, mask):
    return tokenizer_position_ids(mask) if mode == "tokenizer" else None


def train(cfg, w, lora, batches, steps, grad_accum, lr, weight_decay, warmup, total,
          max_grad_norm, num_items_mode, positions, betas=(0.9, 0.999), eps=1e-8, autocast=False):
    """HF Trainer's step, as llama_ref.train, through this family's forward; with `autocast`
    the forward runs under torch.autocast("cpu", torch.bfloat16) (HF Trainer's bf16 on CPU;
    the logits come out fp32, so the loss is the same inside or outside the region)."""
    def fwd(ids, mask):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return forward(cfg, w, ids, mask, lora, positions_for(positions, mask))
    return L.train(cfg, w, lora, batches, steps, grad_accum, lr, weight_decay, warmup, total,
                   max_grad_norm, num_items_mode, betas, eps, forward_fn=fwd)


def cmd_run(a):
    torch.set_num_threads(a.threads)
    cfg, w = load_model(a.model)
    if a.dtype == "bfloat16":  # from_pretrained(torch_dtype=torch.bfloat16): the demo's load
        w = {k: v.to(torch.bfloat16) for k, v in w.items()}
    batches = L.load_batches(a.data)
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    base_name = os.path.abspath(a.model)
    if a.start_adapter:
        lora, dropout = load_adapter(a.start_adapter)
    else:
        if a.dropout != 0.0:
            raise SystemExit("only lora dropout 0 can be matched deterministically")
        lora = make_lora(cfg, a.r, a.alpha, expand_targets(a.target_modules), a.seed, a.nonzero_b)
        dropout = a.dropout
    start_dir = os.path.join(out, "start_adapter")
    save_adapter(start_dir, lora, dropout, base_name)

    def fwd(ids, m, lo=None):
        return forward(cfg, w, ids, m, lo, positions_for(a.positions, m))

    with torch.no_grad():
        lb = [fwd(ids, m) for ids, m, _ in batches]
        la = [fwd(ids, m, lora) for ids, m, _ in batches]
    steps = a.steps if a.steps is not None else len(batches) // a.grad_accum
    if steps * a.grad_accum > len(batches):
        raise SystemExit(f"{steps} steps x grad_accum {a.grad_accum} > {len(batches)} micro-batches")
    total = a.total_steps if a.total_steps is not None else steps
    hist = train(cfg, w, lora, batches, steps, a.grad_accum, a.lr, a.weight_decay, a.warmup_steps,
                 total, a.max_grad_norm, a.num_items, a.positions, autocast=a.autocast)
    final_dir = os.path.join(out, "final_adapter")
    final_path = save_adapter(final_dir, lora, dropout, base_name)
    with torch.no_grad():
        lf = [fwd(ids, m, lora) for ids, m, _ in batches]

    logit_tensors = {}
    for i in range(len(batches)):
        logit_tensors[f"logits_base.{i}"] = lb[i]
        logit_tensors[f"logits_adapter.{i}"] = la[i]
        logit_tensors[f"logits_final.{i}"] = lf[i]
    logits_file = os.path.join(out, "logits.safetensors")
    L.st_save(logits_file, logit_tensors)

    golden = {
        "format": FMT_VERSION,
        "model_dir": base_name,
        "data": os.path.abspath(a.data),
        "model": {"model_type": "chatglm", "padded_vocab_size": cfg.vocab, "hidden_size": cfg.hidden,
                  "num_layers": cfg.layers, "num_attention_heads": cfg.heads,
                  "multi_query_attention": cfg.mqa, "multi_query_group_num": cfg.groups,
                  "kv_channels": cfg.head_dim, "rope_ratio": cfg.rope_ratio,
                  "seq_length": cfg.seq_length},
        "positions": a.positions,
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
        "loss_base": [L.mean_loss(lb[i], batches[i][2]) for i in range(len(batches))],
        "loss_adapter": [L.mean_loss(la[i], batches[i][2]) for i in range(len(batches))],
        "loss_final": [L.mean_loss(lf[i], batches[i][2]) for i in range(len(batches))],
    }
    golden.update(hist)
    gpath = os.path.join(out, "golden.json")
    with open(gpath, "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print(gpath)


# ----------------------------------------------------------------------------------------------
# selftest
# ----------------------------------------------------------------------------------------------

def _tiny_args(**kw):
    d = dict(vocab=97, hidden=32, layers=2, heads=4, groups=2, kv_channels=None, ffn=40,
             flavor="glm4", rope_ratio=None, seq_length=64, eps=None, no_mqa=False,
             add_bias_linear=False, no_qkv_bias=False)
    d.update(kw)
    return argparse.Namespace(**d)


def _loop_attention(q, k, v, attention_mask):
    """Per-(batch, head, query) loops over un-expanded k/v [B, G, T, D]: group = h // rep;
    keys listed explicitly (a padding query sees all keys); softmax via exp/sum."""
    B, H, T, D = q.shape
    rep = H // k.shape[1]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            g = h // rep
            for i in range(T):
                if attention_mask is None or attention_mask[b, i] != 0:
                    keys = [j for j in range(i + 1) if attention_mask is None or attention_mask[b, j] != 0]
                else:
                    keys = list(range(T))
                sc = torch.stack([(q[b, h, i] * k[b, g, j]).sum() / math.sqrt(D) for j in keys])
                e = torch.exp(sc - sc.max())
                pr = e / e.sum()
                out[b, h, i] = sum(pr[n] * v[b, g, j] for n, j in enumerate(keys))
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
    mask = torch.tensor([[1] * 8, [1, 1, 1, 1, 1, 0, 0, 0]])
    cfg4 = Cfg(build_config(_tiny_args()))
    w4 = random_weights(cfg4, 3)

    # 1. rotary by hand: D=8 -> rot_dim 4, two pairs; theta = (1, base^-1/2)
    c = Cfg(build_config(_tiny_args(hidden=16, heads=2, groups=1, kv_channels=8, rope_ratio=2)))
    x = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 6.0, 7.0, 8.0]).view(1, 1, 1, 8)
    th1 = (10000 * 2) ** -0.5
    got = rotate(x, rope_table(c, 4)[None, 3:4])
    want = torch.tensor([math.cos(3), math.sin(3), -math.sin(3 * th1), math.cos(3 * th1), 5, 6, 7, 8])
    check("rotary: pairs (x0,x1) rotated by pos*theta_i, second half untouched",
          torch.allclose(got.flatten(), want, atol=1e-6), f"{got.flatten().tolist()}")
    xs = torch.randn(1, 2, 5, 8)
    r = rotate(xs, rope_table(c, 5)[None])
    check("rotary: position 0 is the identity, pass-through half equal at every position",
          torch.equal(r[:, :, 0], xs[:, :, 0]) and torch.equal(r[..., 4:], xs[..., 4:]))
    # complex-number form of the same rotation
    xc = torch.view_as_complex(xs[..., :4].reshape(1, 2, 5, 2, 2).contiguous())
    ang = torch.outer(torch.arange(5.0), 1.0 / (20000 ** (torch.arange(0, 4, 2).float() / 4)))
    rc = torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)).flatten(3)
    check("rotary == complex multiplication on the first half", torch.allclose(rc, r[..., :4], atol=1e-5))

    # 2. masks: get_masks semantics written out
    m = glm_masks(mask)
    ok = m is not None and glm_masks(torch.ones(2, 8, dtype=torch.int64)) is None
    ok = ok and bool((~m[1, 0, 6]).all())                       # padding query sees all keys
    ok = ok and bool(m[1, 0, 3, 4]) and not bool(m[1, 0, 3, 3])  # causal for real queries
    ok = ok and bool(m[0, 0, 2, 5]) and not bool(m[0, 0, 7, 0])
    left = torch.tensor([[0, 0, 1, 1]])
    ml = glm_masks(left)
    ok = ok and bool((~ml[0, 0, 0]).all()) and bool(ml[0, 0, 3, 1]) and not bool(ml[0, 0, 3, 2])
    check("get_masks: causal+padding for real queries, all keys for padding queries", ok)

    # 3. MQA attention (expand) == explicit loops, with and without padding
    lo = {}

    def capture(q, k, v, masked):
        lo["q"], lo["k"], lo["v"] = q, k, v
        return attention_sdpa(q, k.repeat_interleave(cfg4.heads // cfg4.groups, 1),
                              v.repeat_interleave(cfg4.heads // cfg4.groups, 1), masked)

    base = forward(cfg4, w4, ids, mask)
    forward(cfg4, w4, ids, mask, attn_impl=capture)
    q_, k_, v_ = lo["q"], lo["k"], lo["v"]
    G, rep = cfg4.groups, cfg4.heads // cfg4.groups
    ke = k_.unsqueeze(2).expand(2, G, rep, 8, cfg4.head_dim).reshape(2, cfg4.heads, 8, cfg4.head_dim)
    ve = v_.unsqueeze(2).expand(2, G, rep, 8, cfg4.head_dim).reshape(2, cfg4.heads, 8, cfg4.head_dim)
    d = float((attention_sdpa(q_, ke, ve, glm_masks(mask)) - _loop_attention(q_, k_, v_, mask)).abs().max())
    check("group expansion + mask == per-head loops (group = head // rep)", d < 1e-5, f"max diff {d:.2e}")

    # 4. eager path (baddbmm, layer scaling coeff) == sdpa form in fp32
    le = forward(cfg4, w4, ids, mask, eager=True)
    d = float((le - base).abs().max())
    check("eager CoreAttention with query_key_layer_scaling == 1/sqrt(D) form", d < 1e-5, f"{d:.2e}")
    d0 = float((forward(cfg4, w4, ids, None, eager=True) - forward(cfg4, w4, ids, None)).abs().max())
    check("eager == sdpa without mask (causal)", d0 < 1e-5, f"{d0:.2e}")

    # 5. padding invariance with the tokenizer's positions, both sides
    single = forward(cfg4, w4, ids[1:, :5], None)
    right = forward(cfg4, w4, ids[1:], mask[1:], position_ids=tokenizer_position_ids(mask[1:]))
    lid = torch.cat([torch.zeros(1, 3, dtype=torch.int64), ids[1:, :5]], 1)
    lmask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    leftl = forward(cfg4, w4, lid, lmask, position_ids=tokenizer_position_ids(lmask))
    d1 = float((right[0, :5] - single[0]).abs().max())
    d2 = float((leftl[0, 3:] - single[0]).abs().max())
    ar = forward(cfg4, w4, ids[1:], mask[1:])
    d3 = float((ar[0, :5] - right[0, :5]).abs().max())
    check("real-token logits independent of right/left padding (tokenizer positions)",
          d1 < 1e-5 and d2 < 1e-5 and d3 < 1e-6, f"right {d1:.2e} left {d2:.2e} arange {d3:.2e}")
    check("tokenizer positions", tokenizer_position_ids(lmask).tolist() == [[0, 0, 0, 0, 1, 2, 3, 4]] and
          tokenizer_position_ids(mask[1:]).tolist() == [[0, 1, 2, 3, 4, 0, 0, 0]])

    # 6. swiglu: the first half of dense_h_to_4h is the gate
    x = torch.randn(3, cfg4.hidden)
    wt = w4["transformer.encoder.layers.0.mlp.dense_h_to_4h.weight"]
    y = F.linear(x, wt)
    man = F.silu(x @ wt[:cfg4.ffn].T) * (x @ wt[cfg4.ffn:].T)
    gate, up = y.chunk(2, -1)
    check("swiglu: silu(first half) * second half", torch.allclose(F.silu(gate) * up, man, atol=1e-6))

    # 7. non-MQA layout and add_bias_linear run; second half of each head position-free
    cn = Cfg(build_config(_tiny_args(no_mqa=True, add_bias_linear=True, flavor="chatglm3")))
    wn = random_weights(cn, 5)
    ok = (wn["transformer.encoder.layers.0.self_attention.query_key_value.weight"].shape == (96, 32)
          and "transformer.encoder.layers.0.mlp.dense_4h_to_h.bias" in wn and cn.groups == cn.heads)
    ln = forward(cn, wn, ids, mask)
    check("multi_query_attention=false (per-head [q|k|v]) and add_bias_linear", ok and bool(torch.isfinite(ln).all()))

    # 8. config: key sets, rope_ratio, eos list; unsupported options rejected
    c3 = build_config(_tiny_args(flavor="chatglm3"))
    c4 = build_config(_tiny_args())
    ok = "rope_ratio" not in c3 and c4["rope_ratio"] == 500 and c4["eos_token_id"] == [2, 3, 4]
    ok = ok and Cfg(c3).rope_ratio == 1 and c4["num_hidden_layers"] == c4["num_layers"]
    for k, v in (("rmsnorm", False), ("apply_residual_connection_post_layernorm", True),
                 ("post_layer_norm", False)):
        bad = dict(c4)
        bad[k] = v
        try:
            Cfg(bad)
            ok = False
        except ValueError:
            pass
    check("config: chatglm3/glm4 keys, rope_ratio default 1, unsupported options refused", ok)

    with tempfile.TemporaryDirectory() as td:
        # 9. make writes the checkpoint (with inv_freq), run/adapters round trip
        md = os.path.join(td, "model")
        ma = _tiny_args(out=md, seed=1, init_scale=1.0)
        cmd_make(ma)
        cfgm, wm = load_model(md)
        _, hdr = L.st_read_header(os.path.join(md, "model.safetensors"))
        names = set(hdr) - {"__metadata__"}
        want = {"transformer.embedding.word_embeddings.weight", INV_FREQ,
                "transformer.encoder.final_layernorm.weight", "transformer.output_layer.weight"}
        for i in range(2):
            p = f"transformer.encoder.layers.{i}."
            want |= {p + "input_layernorm.weight", p + "self_attention.query_key_value.weight",
                     p + "self_attention.query_key_value.bias", p + "self_attention.dense.weight",
                     p + "post_attention_layernorm.weight", p + "mlp.dense_h_to_4h.weight",
                     p + "mlp.dense_4h_to_h.weight"}
        check("checkpoint tensor names == THUDM names", names == want, str(sorted(names ^ want)))
        lora1 = make_lora(cfgm, 4, 8, ["query_key_value"], 0, True)
        ad = os.path.join(td, "ad")
        save_adapter(ad, lora1, 0.0, md)
        lr_, _ = load_adapter(ad)
        _, hdr = L.st_read_header(os.path.join(ad, "adapter_model.safetensors"))
        ok = all(torch.equal(lr_.w[k][0], lora1.w[k][0]) and torch.equal(lr_.w[k][1], lora1.w[k][1])
                 for k in lora1.w) and lr_.targets == ["query_key_value"]
        ok = ok and "base_model.model.transformer.encoder.layers.0.self_attention.query_key_value.lora_A.weight" in hdr
        ok = ok and tuple(lora1.w[module_path(0, "query_key_value")][1].shape) == (cfgm.qkv_out(), 4)
        check("adapter save/load round trip (PEFT names, qkv lora_B [(H+2G)D, r])", ok)

        # 10. grad accumulation == single batch
        labels = ids.masked_fill(mask == 0, -100)

        def grads_for(micro, n_items):
            lo_ = make_lora(cfgm, 4, 8, ["query_key_value", "dense_4h_to_h"], 0, True)
            ps = lo_.params(cfgm)
            for q in ps:
                q.requires_grad_(True)
            tot = 0.0
            for i_, m_, lab_ in micro:
                loss = L.causal_lm_loss_sum(forward(cfgm, wm, i_, m_, lo_, tokenizer_position_ids(m_)),
                                            lab_) / n_items
                loss.backward()
                tot += float(loss)
            return tot, [q.grad.clone() for q in ps]

        n_all = L.count_items(labels, "hf")
        t1, g1 = grads_for([(ids, mask, labels)], n_all)
        t2, g2 = grads_for([(ids[:1], mask[:1], labels[:1]), (ids[1:], mask[1:], labels[1:])], n_all)
        d = max(float((x_ - y_).abs().max()) for x_, y_ in zip(g1, g2))
        check("grad accumulation (sum/N_total) == single batch", abs(t1 - t2) < 1e-6 and d < 1e-6,
              f"loss {t1} vs {t2}, grad diff {d:.2e}")

        # 11. end to end: data + run, reproducible from the saved start adapter
        dp = os.path.join(td, "data.json")
        cmd_data(argparse.Namespace(seed=0, micro_batches=4, batch=2, seq=8, vocab=90, pad_id=0,
                                    prompt_len=1, out=dp, padding_side="left"))
        ra = argparse.Namespace(model=md, data=dp, out=os.path.join(td, "run"), r=4, alpha=8,
                                dropout=0.0, target_modules="all-linear", seed=0, nonzero_b=True,
                                lr=1e-2, weight_decay=0.01, warmup_steps=1, total_steps=None,
                                steps=None, max_grad_norm=1.0, grad_accum=2, num_items="hf",
                                start_adapter=None, threads=1, positions="tokenizer")
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
              and g["logits_base"] != g["logits_adapter"]
              and len(g["logits_base"][0][0][0]) == cfgm.vocab)
        check("run: reproducible from saved start adapter, padded-vocab logits", ok,
              f"loss {g['loss_per_step']} lr {g['lr_per_step']}")

    print(f"{'FAILED' if fails else 'OK'}: {len(fails)} failure(s)")
    return 1 if fails else 0


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("make", help="write a tiny random THUDM-layout model directory")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--flavor", choices=["chatglm3", "glm4"], default="glm4",
                   help="config key set of THUDM/chatglm3-6b or THUDM/glm-4-9b-chat")
    m.add_argument("--vocab", type=int, default=97, help="padded_vocab_size")
    m.add_argument("--hidden", type=int, default=32)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--groups", type=int, default=2, help="multi_query_group_num")
    m.add_argument("--kv-channels", type=int, default=None, help="default hidden/heads")
    m.add_argument("--ffn", type=int, default=48, help="ffn_hidden_size")
    m.add_argument("--rope-ratio", type=float, default=None,
                   help="glm4 default 500; chatglm3 writes the key only when given")
    m.add_argument("--seq-length", type=int, default=None)
    m.add_argument("--eps", type=float, default=None, help="default 1.5625e-7 glm4, 1e-5 chatglm3")
    m.add_argument("--no-mqa", action="store_true", help="multi_query_attention false")
    m.add_argument("--add-bias-linear", action="store_true")
    m.add_argument("--no-qkv-bias", action="store_true")
    m.add_argument("--init-scale", type=float, default=1.0,
                   help="linear weights ~ N(0, (scale/sqrt(fan_in))^2)")

    d = sub.add_parser("data", help="write random padded micro-batches as JSON")
    d.add_argument("--out", required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--micro-batches", type=int, default=4)
    d.add_argument("--batch", type=int, default=2)
    d.add_argument("--seq", type=int, default=8)
    d.add_argument("--vocab", type=int, default=97)
    d.add_argument("--pad-id", type=int, default=0)
    d.add_argument("--prompt-len", type=int, default=0, help="label -100 on the first N tokens")
    d.add_argument("--padding-side", choices=["right", "left"], default="right")

    r = sub.add_parser("run", help="logits + LoRA training trajectory -> golden.json")
    r.add_argument("--model", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--r", type=int, default=4)
    r.add_argument("--alpha", type=float, default=8)
    r.add_argument("--dropout", type=float, default=0.0)
    r.add_argument("--target-modules", default="query_key_value",
                   help="comma list of query_key_value,dense,dense_h_to_4h,dense_4h_to_h or all-linear")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--nonzero-b", action="store_true")
    r.add_argument("--start-adapter", default=None)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--weight-decay", type=float, default=0.0)
    r.add_argument("--warmup-steps", type=int, default=0)
    r.add_argument("--steps", type=int, default=None)
    r.add_argument("--total-steps", type=int, default=None)
    r.add_argument("--max-grad-norm", type=float, default=1.0)
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--num-items", choices=["hf", "shifted"], default="hf")
    r.add_argument("--positions", choices=["tokenizer", "arange"], default="tokenizer",
                   help="position_ids as the GLM tokenizers' _pad supplies them, or none (arange)")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the base weights' dtype (the adapter stays fp32, as PEFT >= 0.12 keeps it)")
    r.add_argument("--autocast", action="store_true", help="train under CPU bf16 autocast (HF bf16: true)")

    sub.add_parser("selftest", help="internal consistency checks")
    a = ap.parse_args(argv)
    if a.cmd == "make":
        if a.rope_ratio is not None and a.rope_ratio == int(a.rope_ratio):
            a.rope_ratio = int(a.rope_ratio)
        cmd_make(a)
    elif a.cmd == "data":
        cmd_data(a)
    elif a.cmd == "run":
        if a.alpha == int(a.alpha):
            a.alpha = int(a.alpha)
        cmd_run(a)
    else:
        return cmd_selftest(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
