// ChatGLM family decoder (ChatGLM3-6B, GLM-4-9B-chat) following THUDM's modeling_chatglm.py:
// RMSNorm (statistic in fp32), a fused query_key_value projection with multi-query groups,
// rotary embedding on the first half of each head in GLM's interleaved pair layout,
// SwiGLU from the fused dense_h_to_4h, pre-norm residuals, a separate output layer over the
// padded vocabulary. Module names are the HF checkpoint's (transformer.encoder.layers.N...).
//
// Attention scaling: THUDM's eager path divides q.k by sqrt(kv_channels) * layer_number and
// multiplies the scores by layer_number again when apply_query_key_layer_scaling is set (a
// Megatron fp16 overflow guard); its SDPA path, the default under torch 2, divides by
// sqrt(kv_channels) only. Both are q.k / sqrt(kv_channels), which is what is computed here.
//
// Masking (ChatGLMPreTrainedModel.get_masks): a query at a real token sees the real tokens at
// or before it; a query at a padding position sees every position (that keeps its softmax
// finite; its output is never used by real tokens). Positions follow the GLM tokenizers'
// _pad: real tokens are numbered 0..n-1 in order and padding gets 0, so left padding (what
// the GLM-4 demo's collator produces) and right padding give each real token the same
// rotary angle as the unpadded sequence.
#include "models/chatglm.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace ftrun::models {
namespace {

// THUDM's RMSNorm: the statistic in fp32, the input multiplied in (promoting to fp32), the
// weight applied, and the result cast back to the input dtype. (Llama's casts before the
// weight; in fp32 both are the same.)
class GlmRMSNormImpl : public torch::nn::Module {
 public:
  GlmRMSNormImpl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", param_ones({dim}));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto variance = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
    auto h = x * torch::rsqrt(variance + eps_);
    return (weight * h).to(x.scalar_type());
  }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(GlmRMSNorm);

class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const ModelConfig& c)
      : heads_(c.num_attention_heads),
        groups_(c.num_key_value_heads),
        head_dim_(c.head_dim),
        mqa_(c.chatglm.multi_query_attention) {
    int64_t qkv_out = mqa_ ? (heads_ + 2 * groups_) * head_dim_ : 3 * heads_ * head_dim_;
    query_key_value = register_module("query_key_value", Linear(c.hidden_size, qkv_out, c.qkv_bias));
    dense = register_module("dense", Linear(heads_ * head_dim_, c.hidden_size, c.attention_bias));
  }

  // x [B, T, hidden]; cache [B, T, rotary_dim/2, 2]; mask additive [B, 1, T, N + T]; pk/pv:
  // N prefix slots [B, groups, N, D] taken as they are (undefined when N = 0).
  // kv_out, when given, receives the keys/values of all N + T slots (what a KV cache keeps);
  // pk/pv may equally be cached past keys/values. sdpa: scaled_dot_product_attention
  // (models/attention.h) instead of the eager path; then an undefined mask is the plain causal one.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cache, const at::Tensor& mask,
                     const at::Tensor& pk = {}, const at::Tensor& pv = {},
                     std::pair<at::Tensor, at::Tensor>* kv_out = nullptr, bool sdpa = false) {
    auto B = x.size(0), T = x.size(1), D = head_dim_;
    auto mixed = query_key_value(x);
    at::Tensor q, k, v;
    if (mqa_) {
      // [all query heads | all key groups | all value groups]
      q = mixed.narrow(-1, 0, heads_ * D).view({B, T, heads_, D});
      k = mixed.narrow(-1, heads_ * D, groups_ * D).view({B, T, groups_, D});
      v = mixed.narrow(-1, (heads_ + groups_) * D, groups_ * D).view({B, T, groups_, D});
    } else {
      // Without multi-query attention each head's q, k, v sit side by side.
      auto per_head = mixed.view({B, T, heads_, 3 * D});
      q = per_head.narrow(-1, 0, D);
      k = per_head.narrow(-1, D, D);
      v = per_head.narrow(-1, 2 * D, D);
    }
    q = chatglm_apply_rotary(q.transpose(1, 2), cache);
    k = chatglm_apply_rotary(k.transpose(1, 2), cache);
    v = v.transpose(1, 2);
    if (pk.defined()) {
      k = torch::cat({pk.to(k.scalar_type()), k}, 2);
      v = torch::cat({pv.to(v.scalar_type()), v}, 2);
    }
    if (kv_out) *kv_out = {k, v};
    auto S = k.size(2);
    if (groups_ != heads_) {
      // Group g serves query heads g*rep .. g*rep+rep-1 (unsqueeze + expand + view in THUDM).
      auto rep = heads_ / groups_;
      k = k.unsqueeze(2).expand({B, groups_, rep, S, D}).reshape({B, heads_, S, D});
      v = v.unsqueeze(2).expand({B, groups_, rep, S, D}).reshape({B, heads_, S, D});
    }
    if (sdpa) return dense(sdpa_attention(q, k, v, mask).transpose(1, 2).reshape({B, T, heads_ * D}));
    // Heads are independent: when the fp32 softmax of all heads would be large (a 9B model's
    // P-Tuning step: 32 heads x 1,025 x 1,537 x 4 bytes = 200 MB), the heads go through in
    // groups of at most kAttentionChunkBytes, so the transient buffers (the fp32 copy of the
    // scores; in backward the fp32 gradients, a few at once) exist for one group at a time.
    // What autograd keeps is the same. Forward values are those of the one-shot computation;
    // gradients too at these sizes (bit-equal at the 9B shapes, bf16 and fp32; a matmul
    // kernel may sum in another order for other shapes). Small attention (every test model)
    // takes the one-shot path.
    const int64_t per_head = B * T * S * int64_t(sizeof(float));
    const int64_t step = std::max<int64_t>(1, std::min<int64_t>(heads_, kAttentionChunkBytes / std::max<int64_t>(per_head, 1)));
    if (step >= heads_) return dense(attend(q, k, v, mask).transpose(1, 2).reshape({B, T, heads_ * D}));
    std::vector<at::Tensor> parts;
    for (int64_t h0 = 0; h0 < heads_; h0 += step) {
      const int64_t n = std::min(step, heads_ - h0);
      parts.push_back(attend(q.narrow(1, h0, n), k.narrow(1, h0, n), v.narrow(1, h0, n), mask));
    }
    return dense(torch::cat(parts, 1).transpose(1, 2).reshape({B, T, heads_ * D}));
  }

  // Bytes of fp32 attention probabilities computed at once (see forward).
  static constexpr int64_t kAttentionChunkBytes = int64_t(64) << 20;

  // softmax(q.k / sqrt(D) + mask) . v for q [B, h, T, D], k/v [B, h, S, D], mask [B, 1, T, S]:
  // the softmax in fp32 (THUDM's attention_softmax_in_fp32), the product in the input dtype.
  static at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
    auto scores = torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(double(q.size(-1)))) + mask;
    auto probs = torch::softmax(scores, -1, at::kFloat).to(q.scalar_type());
    return torch::matmul(probs, v);
  }

  Linear query_key_value{nullptr}, dense{nullptr};

 private:
  int64_t heads_, groups_, head_dim_;
  bool mqa_;
};
TORCH_MODULE(SelfAttention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const ModelConfig& c) : ffn_(c.intermediate_size) {
    dense_h_to_4h = register_module("dense_h_to_4h", Linear(c.hidden_size, 2 * ffn_, c.mlp_bias));
    dense_4h_to_h = register_module("dense_4h_to_h", Linear(ffn_, c.hidden_size, c.mlp_bias));
  }
  at::Tensor forward(const at::Tensor& x) {
    // swiglu: chunk(2) of the fused output; the first half is the gate, the second the value.
    auto h = dense_h_to_4h(x);
    return dense_4h_to_h(torch::silu(h.narrow(-1, 0, ffn_)) * h.narrow(-1, ffn_, ffn_));
  }
  Linear dense_h_to_4h{nullptr}, dense_4h_to_h{nullptr};

 private:
  int64_t ffn_;
};
TORCH_MODULE(MLP);

class GLMBlockImpl : public torch::nn::Module {
 public:
  explicit GLMBlockImpl(const ModelConfig& c) {
    // Registered in the checkpoint's order.
    input_layernorm = register_module("input_layernorm", GlmRMSNorm(c.hidden_size, c.rms_norm_eps));
    self_attention = register_module("self_attention", SelfAttention(c));
    post_attention_layernorm =
        register_module("post_attention_layernorm", GlmRMSNorm(c.hidden_size, c.rms_norm_eps));
    mlp = register_module("mlp", MLP(c));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cache, const at::Tensor& mask,
                     const at::Tensor& pk = {}, const at::Tensor& pv = {},
                     std::pair<at::Tensor, at::Tensor>* kv_out = nullptr, bool sdpa = false) {
    auto h = x + self_attention->forward(input_layernorm(x), cache, mask, pk, pv, kv_out, sdpa);
    return h + mlp(post_attention_layernorm(h));
  }
  GlmRMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  SelfAttention self_attention{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(GLMBlock);

class EmbeddingImpl : public torch::nn::Module {
 public:
  explicit EmbeddingImpl(const ModelConfig& c) {
    word_embeddings = register_module("word_embeddings", make_embedding(c.vocab_size, c.hidden_size));
  }
  torch::nn::Embedding word_embeddings{nullptr};
};
TORCH_MODULE(Embedding);

class GLMTransformerImpl : public torch::nn::Module {
 public:
  explicit GLMTransformerImpl(const ModelConfig& c) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      blocks.push_back(GLMBlock(c));
      layers->push_back(blocks.back());
    }
    final_layernorm = register_module("final_layernorm", GlmRMSNorm(c.hidden_size, c.rms_norm_eps));
  }
  torch::nn::ModuleList layers{nullptr};
  std::vector<GLMBlock> blocks;
  GlmRMSNorm final_layernorm{nullptr};
};
TORCH_MODULE(GLMTransformer);

class ChatGLMModelImpl : public torch::nn::Module {
 public:
  explicit ChatGLMModelImpl(const ModelConfig& c) {
    embedding = register_module("embedding", Embedding(c));
    encoder = register_module("encoder", GLMTransformer(c));
    output_layer = register_module("output_layer", Linear(c.hidden_size, c.vocab_size, false));
  }
  Embedding embedding{nullptr};
  GLMTransformer encoder{nullptr};
  Linear output_layer{nullptr};
};
TORCH_MODULE(ChatGLMModel);

class ChatGLMForConditionalGeneration : public CausalLM {
 public:
  explicit ChatGLMForConditionalGeneration(const ModelConfig& c) : config_(c) {
    transformer = register_module("transformer", ChatGLMModel(c));
  }

  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) override {
    auto h = encoder_states(input_ids, attention_mask);
    auto norm = transformer->encoder->final_layernorm;
    auto head = transformer->output_layer;
    auto logits = run_unit(head_unit(), [norm, head](const at::Tensor& x) mutable { return head(norm(x)); }, h);
    return logits.to(at::kFloat);
  }

  at::Tensor forward_loss(const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& labels,
                          int64_t* count) override {
    auto h = encoder_states(input_ids, attention_mask);
    // Only the labelled positions reach the head unit (its input is what ZeRO-3 keeps).
    auto rows = select_label_rows(h, labels);
    if (count) *count = rows.count;
    auto norm = transformer->encoder->final_layernorm;
    auto head = transformer->output_layer;
    auto targets = rows.targets;
    auto chunk = loss_chunk_tokens();
    return run_unit(head_unit(), [norm, head, targets, chunk](const at::Tensor& x) mutable {
      return lm_head_loss_sum(norm(x), head, at::Tensor(), targets, chunk);
    }, rows.hidden);
  }

  // The unit of the final norm and the output layer: after the embedding and every block.
  int64_t head_unit() const { return int64_t(transformer->encoder->blocks.size()) + 1; }

  // The hidden states after the last block (units 0 .. L), before the final norm.
  at::Tensor encoder_states(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq]");
    auto B = input_ids.size(0), T = input_ids.size(1);
    // THUDM builds its rotary table for seq_length positions and fails beyond it.
    TORCH_CHECK(T <= config_.max_position_embeddings, config_.path, ": sequence of ", T,
                " tokens is longer than seq_length (", config_.max_position_embeddings, ")");
    if (attention_mask.defined())
      TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == B && attention_mask.size(1) == T,
                  "attention_mask must be [batch, seq] like input_ids");
    auto embed = transformer->embedding->word_embeddings;
    auto h = embedding_output(run_unit(0, [embed](const at::Tensor& ids) mutable { return embed(ids); }, input_ids));  // + NEFTune noise in training
    auto dtype = h.scalar_type();

    // Built on the input's device so the model also runs where its weights were moved.
    auto device = input_ids.device();
    // Packed rows (models/model.h packed_layout): positions restart at 0 for each sample and
    // attention is block-diagonal; a 0/1 mask takes the code below unchanged.
    const bool packed = is_packed_mask(attention_mask);
    PackedLayout layout;
    if (packed) layout = packed_layout(attention_mask, device);
    auto positions = packed ? layout.positions : chatglm_position_ids(attention_mask, B, T).to(device);
    auto cache = chatglm_rope_cache(config_, positions);
    // THUDM keeps the table in the checkpoint's dtype when that is half precision.
    if (dtype == at::kBFloat16 || dtype == at::kHalf) cache = cache.to(dtype);

    // allowed[b, i, j]: query i may attend key j (see the file comment).
    auto causal = torch::ones({T, T}, torch::TensorOptions().dtype(at::kBool).device(device)).tril().view({1, 1, T, T});
    at::Tensor allowed = causal.expand({B, 1, T, T});
    if (packed) {
      allowed = layout.allowed;
    } else if (attention_mask.defined()) {
      auto real = attention_mask.to(device).to(at::kBool);
      allowed = causal.logical_and(real.view({B, 1, 1, T})).logical_or(real.logical_not().view({B, 1, T, 1}));
    }
    auto mask = torch::zeros({B, 1, T, T}, torch::TensorOptions().dtype(dtype).device(device))
                    .masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    // SDPA without a mask (flash on a GPU) where the mask is the plain causal triangle.
    const bool sdpa = attention_kernel() == AttentionKernel::kSdpa;
    const auto plain = sdpa && !packed && (!attention_mask.defined() || attention_mask.all().item<bool>())
                           ? at::Tensor()
                           : mask;

    int64_t unit = 1;
    auto prefix = prefix_;
    for (auto& block : transformer->encoder->blocks) {
      int64_t index = unit - 1;
      h = run_unit(unit++, [block, cache, mask, plain, sdpa, prefix, index, B](const at::Tensor& x) mutable {
        if (!prefix) return block->forward(x, cache, plain, {}, {}, nullptr, sdpa);
        auto kv = prefix(index, B);
        if (!kv.first.defined()) return block->forward(x, cache, plain, {}, {}, nullptr, sdpa);
        // Prefix slots (P-Tuning v2) are visible to every position; real positions do not move.
        auto full = torch::cat({torch::zeros({B, 1, mask.size(2), kv.first.size(2)}, mask.options()), mask}, 3);
        return block->forward(x, cache, full, kv.first, kv.second, nullptr, sdpa);
      }, h);
    }
    return h;
  }

  at::Tensor forward_cached(const at::Tensor& input_ids, KVCache& kv, const at::Tensor& attention_mask,
                            bool last_only) override {
    TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq]");
    auto B = input_ids.size(0), T = input_ids.size(1), P = kv.length;
    // Positions count real tokens only (left padding takes none).
    int64_t longest = kv.next_position.defined() ? kv.next_position.max().item<int64_t>() : P;
    TORCH_CHECK(longest + T <= config_.max_position_embeddings, config_.path, ": sequence of ", longest + T,
                " tokens is longer than seq_length (", config_.max_position_embeddings, ")");
    auto& blocks = transformer->encoder->blocks;
    auto L = int64_t(blocks.size());
    auto embed = transformer->embedding->word_embeddings;
    auto h = run_unit(0, [embed](const at::Tensor& ids) mutable { return embed(ids); }, input_ids);
    auto dtype = h.scalar_type();
    auto device = input_ids.device();
    if (kv.k.empty()) {
      kv.k.assign(L, at::Tensor());
      kv.v.assign(L, at::Tensor());
      // P-Tuning v2 slots enter the cache once, in front of the first tokens.
      if (prefix_)
        for (int64_t i = 0; i < L; ++i) {
          auto p = prefix_(i, B);
          if (p.first.defined()) {
            kv.k[i] = p.first.to(dtype);
            kv.v[i] = p.second.to(dtype);
          }
        }
    }
    // Each row's real tokens numbered on from its own count (prefix slots and padding take none).
    auto step = advance_cache(kv, attention_mask, B, T, device);
    auto rope = chatglm_rope_cache(config_, step.positions);
    if (dtype == at::kBFloat16 || dtype == at::kHalf) rope = rope.to(dtype);
    // As in forward(): a padding query sees every slot (its output is never used).
    auto allowed = step.allowed.logical_or(step.query_real.logical_not().view({B, 1, T, 1}));
    auto opts = torch::TensorOptions().dtype(dtype).device(device);
    auto mask = torch::zeros(allowed.sizes(), opts).masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    KVCache* kc = &kv;
    const bool sdpa = attention_kernel() == AttentionKernel::kSdpa;
    for (int64_t i = 0; i < L; ++i) {
      auto block = blocks[size_t(i)];
      h = run_unit(i + 1, [block, rope, mask, kc, i, P, B, T, sdpa](const at::Tensor& x) mutable {
        auto pk = kc->k[size_t(i)], pv = kc->v[size_t(i)];
        int64_t prefix_slots = (pk.defined() ? pk.size(2) : 0) - P;
        auto m = prefix_slots > 0 ? torch::cat({torch::zeros({B, 1, T, prefix_slots}, mask.options()), mask}, 3) : mask;
        std::pair<at::Tensor, at::Tensor> out;
        auto y = block->forward(x, rope, m, pk, pv, &out, sdpa);
        kc->k[size_t(i)] = out.first;
        kc->v[size_t(i)] = out.second;
        return y;
      }, h);
    }
    auto norm = transformer->encoder->final_layernorm;
    auto head = transformer->output_layer;
    if (last_only) h = h.narrow(1, T - 1, 1);  // norm and head act on each position alone
    auto logits = run_unit(L + 1, [norm, head](const at::Tensor& x) mutable { return head(norm(x)); }, h);
    return logits.to(at::kFloat);
  }

  const ModelConfig& config() const override { return config_; }

  std::vector<std::vector<std::string>> unit_prefixes() const override {
    std::vector<std::vector<std::string>> u = {{"transformer.embedding."}};
    for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
      u.push_back({"transformer.encoder.layers." + std::to_string(i) + "."});
    u.push_back({"transformer.encoder.final_layernorm.", "transformer.output_layer."});
    return u;
  }

  ChatGLMModel transformer{nullptr};

 private:
  ModelConfig config_;
};

}  // namespace

at::Tensor chatglm_rope_cache(const ModelConfig& c, const at::Tensor& positions) {
  // RotaryEmbedding.forward_impl with n_elem = rotary_dim (= kv_channels / 2):
  // theta_i = 1 / base^(2i / n_elem), angle = position * theta_i, all in fp32.
  auto n = c.chatglm.rotary_dim;
  auto idx = torch::arange(0, n, 2, torch::TensorOptions().dtype(at::kFloat).device(positions.device()));
  auto theta = 1.0 / torch::pow(c.rope_theta, idx / double(n));
  auto angles = positions.to(at::kFloat).unsqueeze(-1) * theta;  // [..., n/2]
  return torch::stack({angles.cos(), angles.sin()}, -1);
}

at::Tensor chatglm_apply_rotary(const at::Tensor& x, const at::Tensor& cache) {
  TORCH_CHECK(x.dim() == 4 && cache.dim() == 4, "chatglm_apply_rotary: x [B, H, T, D], cache [B, T, R/2, 2]");
  auto B = x.size(0), H = x.size(1), T = x.size(2);
  auto half = cache.size(2), rot = 2 * half;
  TORCH_CHECK(rot <= x.size(3), "rotary dim exceeds head dim");
  auto pairs = x.narrow(-1, 0, rot).reshape({B, H, T, half, 2});
  auto x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
  auto c = cache.select(-1, 0).unsqueeze(1), s = cache.select(-1, 1).unsqueeze(1);  // [B, 1, T, R/2]
  auto rotated = torch::stack({x0 * c - x1 * s, x1 * c + x0 * s}, -1).flatten(3);
  return torch::cat({rotated, x.narrow(-1, rot, x.size(3) - rot)}, -1);
}

at::Tensor chatglm_position_ids(const at::Tensor& attention_mask, int64_t batch, int64_t seq_len) {
  if (!attention_mask.defined())
    return torch::arange(seq_len, torch::TensorOptions().dtype(at::kLong)).unsqueeze(0).expand({batch, seq_len});
  auto real = attention_mask.to(at::kLong) != 0;
  auto counted = real.to(at::kLong).cumsum(1) - 1;
  return torch::where(real, counted, torch::zeros_like(counted));
}

std::shared_ptr<CausalLM> make_chatglm(const ModelConfig& config) {
  TORCH_CHECK(config.model_type == "chatglm", "make_chatglm: model_type is ", config.model_type);
  return std::make_shared<ChatGLMForConditionalGeneration>(config);
}

}  // namespace ftrun::models
