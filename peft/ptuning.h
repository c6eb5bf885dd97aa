// P-Tuning v2 as PEFT's PREFIX_TUNING (PrefixTuningConfig): learned key/value prefixes of
// num_virtual_tokens slots for every layer's attention, positions of the real tokens kept.
//
// Encoder: Embedding(N, num_layers * 2 * token_dim), or with prefix_projection
// Embedding(N, token_dim) -> Linear(token_dim, encoder_hidden_size) -> Tanh ->
// Linear(encoder_hidden_size, num_layers * 2 * token_dim). token_dim must be
// head_dim x kv_heads (GQA: PEFT forces it so when the config has num_key_value_heads).
// Saved as PEFT does: adapter_config.json + adapter_model.safetensors holding one tensor
// `prompt_embeddings` [N, num_layers * 2 * token_dim] (the encoder output), row layout
// view(N, 2L, kv_heads, head_dim) with index 2i = layer i's key, 2i+1 = its value.
#pragma once
#include <nlohmann/json.hpp>

#include "peft/strategy.h"

namespace ftrun::peft {

struct PrefixConfig {
  int64_t num_virtual_tokens = 0;
  int64_t token_dim = -1;            // -1: head_dim x kv_heads of the model
  int64_t num_attention_heads = -1;  // -1: kv_heads of the model
  int64_t num_layers = -1;           // -1: the model's layer count
  bool prefix_projection = false;
  int64_t encoder_hidden_size = -1;  // -1: token_dim
  nlohmann::json raw;
};

// Validates PEFT's PrefixTuningConfig keys; ChatGLM3's `pre_seq_len` is accepted as
// num_virtual_tokens.
PrefixConfig parse_prefix_config(const nlohmann::json& j);

}  // namespace ftrun::peft
