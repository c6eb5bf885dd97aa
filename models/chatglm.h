// The ChatGLM family (ChatGLM3-6B, GLM-4-9B-chat) as THUDM's modeling_chatglm.py defines it,
// with the HF checkpoint's module names. Internal to models/; the rest of ftrun sees CausalLM.
// The rotary helpers are exposed so tests can check the GLM layout by hand.
#pragma once
#include "models/model.h"

namespace ftrun::models {

std::shared_ptr<CausalLM> make_chatglm(const ModelConfig& config);

// cos/sin table for the given positions: [..., rotary_dim/2, 2] (last axis = cos, sin) with
// angle position * theta_i, theta_i = (10000 * rope_ratio)^(-2i / rotary_dim), in fp32.
at::Tensor chatglm_rope_cache(const ModelConfig& config, const at::Tensor& positions);

// Rotates x [B, heads, T, head_dim] by cache [B, T, rotary_dim/2, 2]: the first rotary_dim
// features are taken as consecutive pairs (x[2i], x[2i+1]) and rotated by the pair's angle;
// the remaining features pass through unchanged.
at::Tensor chatglm_apply_rotary(const at::Tensor& x, const at::Tensor& cache);

// Position ids the GLM tokenizers supply with a padded batch: 0..n-1 over the tokens whose
// attention_mask is 1 (in order), 0 on padding; arange(T) when the mask is undefined.
at::Tensor chatglm_position_ids(const at::Tensor& attention_mask, int64_t batch, int64_t seq_len);

}  // namespace ftrun::models
