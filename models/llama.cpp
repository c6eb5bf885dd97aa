// Llama-family decoder following transformers' modeling_llama: RMSNorm in fp32, rotate-half
// RoPE (with the llama3 and linear rope_scaling variants), grouped-query attention with an
// additive causal + padding mask, SwiGLU MLP, tied or untied lm_head, optional biases.
// The same class builds transformers' native GLM-4 ports (modeling_glm / modeling_glm4: partial
// interleaved rotary, fused gate_up_proj, GLM-4-0414's extra norms) and Mistral's sliding
// window, each switched by a ModelConfig field; so is BlueLM (vivo's modeling_bluelm: a
// LayerNorm on the embeddings, and the 32K model's ntkmixed rotary frequencies).
#include "models/llama.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

namespace ftrun::models {
namespace {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", param_ones({dim}));
  }
  at::Tensor forward(const at::Tensor& x) {
    // HF computes the statistic in fp32 whatever the weight dtype, then casts back.
    auto h = x.to(at::kFloat);
    h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return weight * h.to(x.scalar_type());
  }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// torch.nn.LayerNorm over the last dim with weight and bias (BlueLM's embed_layer_norm).
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
    weight = register_parameter("weight", param_ones({dim}));
    bias = register_parameter("bias", param_zeros({dim}));
  }
  at::Tensor forward(const at::Tensor& x) { return torch::layer_norm(x, {dim_}, weight, bias, eps_); }
  at::Tensor weight, bias;

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

// torch.finfo(dtype).min: HF eager's additive-mask fill value.
double lowest_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kBFloat16: return double(std::numeric_limits<c10::BFloat16>::lowest());
    case at::kHalf: return -65504.0;
    default: return std::numeric_limits<float>::lowest();
  }
}

at::Tensor rotate_half(const at::Tensor& x) {
  auto half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// GLM's interleaved form: each pair (x[2i], x[2i+1]) becomes (-x[2i+1], x[2i]).
at::Tensor rotate_pairs(const at::Tensor& x) {
  auto pairs = x.unflatten(-1, {x.size(-1) / 2, 2});
  return torch::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).flatten(-2);
}

// cos/sin tables of the rotated dims from angles [..., rotary_dim/2]: Llama repeats the
// frequency list (cat), GLM repeats each frequency (interleave).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& freqs, bool interleaved, at::ScalarType dtype) {
  auto emb = interleaved ? freqs.repeat_interleave(2, -1) : torch::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// Mistral's sliding window on a bool mask [.., Tq, S] whose query t sits at slot `offset + t`:
// keys more than `window - 1` slots back are cut (transformers masks slot j <= i - window).
at::Tensor apply_window(const at::Tensor& allowed, int64_t window, int64_t offset) {
  if (window <= 0) return allowed;
  auto Tq = allowed.size(-2), S = allowed.size(-1);
  auto opts = torch::TensorOptions().dtype(at::kLong).device(allowed.device());
  auto q = torch::arange(offset, offset + Tq, opts).unsqueeze(1);
  auto k = torch::arange(S, opts).unsqueeze(0);
  return allowed.logical_and(q - k < window);
}

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelConfig& c)
      : heads_(c.num_attention_heads),
        kv_heads_(c.num_key_value_heads),
        head_dim_(c.head_dim),
        rotary_dim_(c.rotary_dim > 0 ? c.rotary_dim : c.head_dim),
        interleaved_(c.rope_interleaved) {
    bool qkv_bias = c.attention_bias || c.qkv_bias;
    q_proj = register_module("q_proj", Linear(c.hidden_size, heads_ * head_dim_, qkv_bias));
    k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, qkv_bias));
    v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, qkv_bias));
    o_proj = register_module("o_proj", Linear(heads_ * head_dim_, c.hidden_size, c.attention_bias));
  }

  // cos/sin: [T, rotary_dim] (rotary_dim = head_dim but for GLM); mask: additive [B, 1, T, N + T]; pk/pv: N slots in front
  // [B, kv_heads, N, head_dim] (prefix-tuning slots, or cached past keys/values; undefined
  // when N = 0), taken as they are (no rotation). kv_out, when given, receives the keys and
  // values of all N + T slots before repeat_kv (what a KV cache keeps). sdpa:
  // scaled_dot_product_attention (models/attention.h); then an undefined mask is the plain
  // causal one.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& mask, const at::Tensor& pk = {}, const at::Tensor& pv = {},
                     std::pair<at::Tensor, at::Tensor>* kv_out = nullptr, bool sdpa = false) {
    auto B = x.size(0), T = x.size(1);
    auto q = q_proj(x).view({B, T, heads_, head_dim_}).transpose(1, 2);
    auto k = k_proj(x).view({B, T, kv_heads_, head_dim_}).transpose(1, 2);
    auto v = v_proj(x).view({B, T, kv_heads_, head_dim_}).transpose(1, 2);
    // cos/sin come in the hidden states' dtype (transformers >= 4.48 computes them once per
    // forward from the hidden states): under autocast with fp32 weights the bf16 projections
    // are promoted to fp32 here, as in HF.
    q = rotate(q, cos, sin);
    k = rotate(k, cos, sin);
    if (pk.defined()) {
      k = torch::cat({pk.to(k.scalar_type()), k}, 2);
      v = torch::cat({pv.to(v.scalar_type()), v}, 2);
    }
    if (kv_out) *kv_out = {k, v};
    auto S = k.size(2);
    if (kv_heads_ != heads_) {
      // repeat_kv: each kv head serves heads/kv_heads consecutive query heads.
      auto rep = heads_ / kv_heads_;
      k = k.unsqueeze(2).expand({B, kv_heads_, rep, S, head_dim_}).reshape({B, heads_, S, head_dim_});
      v = v.unsqueeze(2).expand({B, kv_heads_, rep, S, head_dim_}).reshape({B, heads_, S, head_dim_});
    }
    if (sdpa) return o_proj(sdpa_attention(q, k, v, mask).transpose(1, 2).reshape({B, T, heads_ * head_dim_}));
    auto scores = torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(double(head_dim_)));
    scores = scores + mask;
    auto probs = torch::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    auto out = torch::matmul(probs, v).transpose(1, 2).reshape({B, T, heads_ * head_dim_});
    return o_proj(out);
  }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  // RoPE on the first rotary_dim dims of each head; the rest pass unchanged (GLM).
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
    if (rotary_dim_ == head_dim_) return x * cos + (interleaved_ ? rotate_pairs(x) : rotate_half(x)) * sin;
    auto r = x.narrow(-1, 0, rotary_dim_);
    auto rotated = r * cos + (interleaved_ ? rotate_pairs(r) : rotate_half(r)) * sin;
    return torch::cat({rotated, x.narrow(-1, rotary_dim_, head_dim_ - rotary_dim_)}, -1);
  }

  int64_t heads_, kv_heads_, head_dim_, rotary_dim_;
  bool interleaved_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const ModelConfig& c) {
    if (c.fused_gate_up) {
      gate_up_proj = register_module("gate_up_proj", Linear(c.hidden_size, 2 * c.intermediate_size, c.mlp_bias));
    } else {
      gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
      up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
    }
    down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
  }
  at::Tensor forward(const at::Tensor& x) {
    if (gate_up_proj) {
      // GlmMLP: the first half of gate_up_proj's output is the gate.
      auto gate_up = gate_up_proj(x).chunk(2, -1);
      return down_proj(gate_up[1] * torch::silu(gate_up[0]));
    }
    return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
  }
  Linear gate_proj{nullptr}, up_proj{nullptr}, gate_up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const ModelConfig& c) {
    self_attn = register_module("self_attn", Attention(c));
    mlp = register_module("mlp", MLP(c));
    input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm =
        register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
    if (c.sandwich_norms) {
      post_self_attn_layernorm = register_module("post_self_attn_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
      post_mlp_layernorm = register_module("post_mlp_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
    }
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     const at::Tensor& mask, const at::Tensor& pk = {}, const at::Tensor& pv = {},
                     std::pair<at::Tensor, at::Tensor>* kv_out = nullptr, bool sdpa = false) {
    auto a = self_attn->forward(input_layernorm(x), cos, sin, mask, pk, pv, kv_out, sdpa);
    if (post_self_attn_layernorm) a = post_self_attn_layernorm(a);  // Glm4DecoderLayer
    auto h = x + a;
    auto m = mlp(post_attention_layernorm(h));
    if (post_mlp_layernorm) m = post_mlp_layernorm(m);
    return h + m;
  }
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  RMSNorm post_self_attn_layernorm{nullptr}, post_mlp_layernorm{nullptr};  // GLM-4-0414 only
};
TORCH_MODULE(DecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const ModelConfig& c) {
    embed_tokens = register_module("embed_tokens",
                                   make_embedding(c.vocab_size, c.hidden_size));
    if (c.embed_layer_norm)  // BlueLM: eps is config.rms_norm_eps (modeling_bluelm.py)
      embed_layer_norm = register_module("embed_layer_norm", LayerNorm(c.hidden_size, c.rms_norm_eps));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      decoder.push_back(DecoderLayer(c));
      layers->push_back(decoder.back());
    }
    norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  }
  torch::nn::Embedding embed_tokens{nullptr};
  LayerNorm embed_layer_norm{nullptr};  // BlueLM's use_stable_embedding only
  torch::nn::ModuleList layers{nullptr};
  std::vector<DecoderLayer> decoder;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLM : public CausalLM {
 public:
  explicit LlamaForCausalLM(const ModelConfig& c) : config_(c) {
    model = register_module("model", LlamaModel(c));
    if (!c.tie_word_embeddings)
      lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
    inv_freq_ = rope_inv_freq(c);
  }

  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) override {
    auto h = decoder_states(input_ids, attention_mask);
    auto norm = model->norm;
    auto head = lm_head;
    auto embed = model->embed_tokens;
    auto logits = run_unit(head_unit(), [norm, head, embed](const at::Tensor& x) mutable {
      auto y = norm(x);
      return head ? head(y) : torch::nn::functional::linear(y, embed->weight);
    }, h);
    return logits.to(at::kFloat);
  }

  at::Tensor forward_loss(const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& labels,
                          int64_t* count) override {
    auto h = decoder_states(input_ids, attention_mask);
    // Only the labelled positions reach the head unit (its input is what ZeRO-3 keeps).
    auto rows = select_label_rows(h, labels);
    if (count) *count = rows.count;
    auto norm = model->norm;
    auto head = lm_head;
    auto embed = model->embed_tokens;
    auto targets = rows.targets;
    auto chunk = loss_chunk_tokens();
    // The weight is read when the unit runs: ZeRO-3 binds it only then.
    return run_unit(head_unit(), [norm, head, embed, targets, chunk](const at::Tensor& x) mutable {
      return lm_head_loss_sum(norm(x), head, head ? at::Tensor() : embed->weight, targets, chunk);
    }, rows.hidden);
  }

  // The hidden states after the last decoder layer (units 0 .. L), before the final norm.
  at::Tensor decoder_states(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq]");
    auto B = input_ids.size(0), T = input_ids.size(1);
    auto embed = model->embed_tokens;
    auto h = embedding_output(run_unit(0, [embed](const at::Tensor& ids) mutable { return embed(ids); }, input_ids));  // + NEFTune noise in training
    h = stable_embedding(h);
    auto dtype = h.scalar_type();

    at::Tensor cos, sin, mask;
    bool plain_causal = false;
    if (is_packed_mask(attention_mask)) {
      // Packed rows (models/model.h packed_layout): each sample at its own positions from 0
      // (HF's position_ids) under a block-diagonal causal mask.
      auto packed = packed_layout(attention_mask, input_ids.device());
      auto freqs = packed.positions.to(at::kFloat).unsqueeze(-1) * inv_freq_.to(input_ids.device());  // [B, T, D/2]
      std::tie(cos, sin) = rope_tables(freqs.unsqueeze(1), config_.rope_interleaved, dtype);          // [B, 1, T, D]
      // The window counts back within the row: inside one sample that is its own distance.
      auto allowed = apply_window(packed.allowed, config_.sliding_window, 0);
      mask = torch::zeros({B, 1, T, T}, torch::TensorOptions().dtype(dtype).device(input_ids.device()))
                 .masked_fill(allowed.logical_not(), lowest_of(dtype));
    } else {
      // Positions 0..T-1 (right padding keeps them valid, as in HF without position_ids). The
      // tables are made on the CPU and copied, so every device uses the CPU path's values.
      const auto device = input_ids.device();
      auto pos = torch::arange(T, torch::TensorOptions().dtype(at::kFloat));
      auto freqs = torch::outer(pos, inv_freq_);
      std::tie(cos, sin) = rope_tables(freqs, config_.rope_interleaved, dtype);
      if (!device.is_cpu()) {
        cos = cos.to(device);
        sin = sin.to(device);
      }
      // SDPA needs no mask (flash on a GPU) where it is the plain causal triangle; then it is
      // made only for P-Tuning's prefix layers.
      plain_causal = attention_kernel() == AttentionKernel::kSdpa && config_.sliding_window <= 0 &&
                     (!attention_mask.defined() || attention_mask.all().item<bool>());
      if (!plain_causal || prefix_) {
        // Additive mask with the dtype's lowest value where attention is not allowed (HF eager).
        auto allowed = apply_window(torch::ones({T, T}, torch::TensorOptions().dtype(at::kBool).device(device)).tril(),
                                    config_.sliding_window, 0);
        auto allowed4 = allowed.view({1, 1, T, T}).expand({B, 1, T, T});
        if (attention_mask.defined())
          allowed4 = allowed4.logical_and(attention_mask.to(device).to(at::kBool).view({B, 1, 1, T}));
        auto lowest = lowest_of(dtype);
        mask = torch::zeros({B, 1, T, T}, torch::TensorOptions().dtype(dtype).device(device))
                   .masked_fill(allowed4.logical_not(), lowest);
      }
    }

    const bool sdpa = attention_kernel() == AttentionKernel::kSdpa;
    const auto plain = plain_causal ? at::Tensor() : mask;

    int64_t unit = 1;
    auto prefix = prefix_;
    for (auto& layer : model->decoder) {
      int64_t index = unit - 1;
      h = run_unit(unit++, [layer, cos, sin, mask, plain, sdpa, prefix, index, B](const at::Tensor& x) mutable {
        if (!prefix) return layer->forward(x, cos, sin, plain, {}, {}, nullptr, sdpa);
        auto kv = prefix(index, B);
        if (!kv.first.defined()) return layer->forward(x, cos, sin, plain, {}, {}, nullptr, sdpa);
        // Prefix slots are visible to every position, padding rows included.
        auto full_mask = torch::cat({torch::zeros({B, 1, mask.size(2), kv.first.size(2)}, mask.options()),
                                     mask}, 3);
        return layer->forward(x, cos, sin, full_mask, kv.first, kv.second, nullptr, sdpa);
      }, h);
    }
    return h;
  }

  // The unit of the final norm and the head: after the embedding and every layer.
  int64_t head_unit() const { return int64_t(model->decoder.size()) + 1; }

  // BlueLM's embed_layer_norm on the embedding unit's output (unchanged without it). Its
  // weights belong to unit 0, so it runs as a second call of unit 0, after NEFTune's hook:
  // HF's hook sits on embed_tokens, before BlueLMModel applies embed_layer_norm, and a
  // recomputed unit must never redraw the noise.
  at::Tensor stable_embedding(const at::Tensor& embeddings) {
    auto norm = model->embed_layer_norm;
    if (!norm) return embeddings;
    return run_unit(0, [norm](const at::Tensor& x) mutable { return norm(x); }, embeddings);
  }

  at::Tensor forward_cached(const at::Tensor& input_ids, KVCache& cache, const at::Tensor& attention_mask,
                            bool last_only) override {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq]");
    auto B = input_ids.size(0), T = input_ids.size(1);
    auto L = int64_t(model->decoder.size());
    auto embed = model->embed_tokens;
    auto h = stable_embedding(run_unit(0, [embed](const at::Tensor& ids) mutable { return embed(ids); }, input_ids));
    auto dtype = h.scalar_type();
    if (cache.k.empty()) {
      cache.k.assign(L, at::Tensor());
      cache.v.assign(L, at::Tensor());
      // The prefix slots enter the cache once, in front of the first tokens.
      if (prefix_)
        for (int64_t i = 0; i < L; ++i) {
          auto kv = prefix_(i, B);
          if (kv.first.defined()) {
            cache.k[i] = kv.first.to(dtype);
            cache.v[i] = kv.second.to(dtype);
          }
        }
    }
    auto step = advance_cache(cache, attention_mask, B, T, input_ids.device());
    // Each row's new tokens at its own positions (prefix slots and padding take none).
    auto freqs = step.positions.to(at::kFloat).unsqueeze(-1) * inv_freq_.to(input_ids.device());  // [B, T, D/2]
    at::Tensor cos, sin;
    std::tie(cos, sin) = rope_tables(freqs.unsqueeze(1), config_.rope_interleaved, dtype);  // [B, 1, T, D]
    auto lowest = lowest_of(dtype);
    // Additive: prefix slots (added per layer) visible; cached and new slots as step.allowed.
    // The window counts cache slots, padding included, as transformers' does over the columns
    // of the generation's attention mask.
    auto allowed = apply_window(step.allowed, config_.sliding_window, step.past);
    auto mask = torch::zeros(allowed.sizes(), torch::TensorOptions().dtype(dtype).device(input_ids.device()))
                    .masked_fill(allowed.logical_not(), lowest);
    KVCache* kc = &cache;
    const int64_t P = step.past;
    const bool sdpa = attention_kernel() == AttentionKernel::kSdpa;
    for (int64_t i = 0; i < L; ++i) {
      auto layer = model->decoder[size_t(i)];
      h = run_unit(i + 1, [layer, cos, sin, mask, kc, i, P, B, T, sdpa](const at::Tensor& x) mutable {
        auto pk = kc->k[size_t(i)], pv = kc->v[size_t(i)];
        int64_t prefix_slots = (pk.defined() ? pk.size(2) : 0) - P;
        auto m = prefix_slots > 0 ? torch::cat({torch::zeros({B, 1, T, prefix_slots}, mask.options()), mask}, 3) : mask;
        std::pair<at::Tensor, at::Tensor> kv;
        auto out = layer->forward(x, cos, sin, m, pk, pv, &kv, sdpa);
        kc->k[size_t(i)] = kv.first;
        kc->v[size_t(i)] = kv.second;
        return out;
      }, h);
    }
    auto norm = model->norm;
    auto head = lm_head;
    if (last_only) h = h.narrow(1, T - 1, 1);  // norm and head act on each position alone
    auto logits = run_unit(L + 1, [norm, head, embed](const at::Tensor& x) mutable {
      auto y = norm(x);
      return head ? head(y) : torch::nn::functional::linear(y, embed->weight);
    }, h);
    return logits.to(at::kFloat);
  }

  const ModelConfig& config() const override { return config_; }

  std::vector<std::vector<std::string>> unit_prefixes() const override {
    std::vector<std::vector<std::string>> u = {{"model.embed_tokens."}};
    if (config_.embed_layer_norm) u[0].push_back("model.embed_layer_norm.");  // BlueLM: runs in unit 0
    for (int64_t i = 0; i < config_.num_hidden_layers; ++i) u.push_back({"model.layers." + std::to_string(i) + "."});
    u.push_back({"model.norm.", "lm_head."});
    return u;
  }

  LlamaModel model{nullptr};
  Linear lm_head{nullptr};

 private:
  ModelConfig config_;
  at::Tensor inv_freq_;
};

}  // namespace

at::Tensor rope_inv_freq(const ModelConfig& c) {
  // Over the rotated dims only (transformers' partial_rotary_factor: GLM rotates half).
  auto d = c.rotary_dim > 0 ? c.rotary_dim : c.head_dim;
  auto idx = torch::arange(0, d, 2, torch::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  auto inv = 1.0 / torch::pow(c.rope_theta, idx / double(d));
  const auto& rs = c.rope_scaling;
  if (rs.type == "linear") return inv / rs.factor;
  if (rs.type == "ntkmixed") {
    // BlueLM-7B-Chat-32K (vivo's NTKMixedScalingRotaryEmbedding): frequency j divided by
    // exp(a * (j + 1)^power), a = ln(int(factor)) / (d/2)^power, so the lowest is divided by
    // exactly int(factor); positions are not rescaled. a in double, the rest in fp32, as there.
    const double a = std::log(double(int64_t(rs.factor))) / std::pow(double(d / 2), rs.power);
    auto j = torch::arange(1, d / 2 + 1, torch::TensorOptions().dtype(at::kLong)).to(at::kFloat);
    return inv / torch::exp(a * j.pow(rs.power));
  }
  if (rs.type != "llama3") return inv;
  // Llama 3.1 frequency rescaling: long wavelengths slowed by `factor`, short ones kept,
  // a smooth blend in between.
  double old_len = double(rs.original_max_position_embeddings);
  double low_wl = old_len / rs.low_freq_factor, high_wl = old_len / rs.high_freq_factor;
  auto wavelen = 2 * M_PI / inv;
  auto scaled = torch::where(wavelen > low_wl, inv / rs.factor, inv);
  auto smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
  auto medium = (wavelen >= high_wl).logical_and(wavelen <= low_wl);
  return torch::where(medium, smoothed, scaled);
}

std::shared_ptr<CausalLM> make_llama(const ModelConfig& config) {
  return std::make_shared<LlamaForCausalLM>(config);
}

}  // namespace ftrun::models
