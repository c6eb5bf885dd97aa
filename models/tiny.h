// Tiny random models in exactly HF's on-disk form, for the embedded demo and tests.
// make-tiny-model's tokenizer recipe per family is in the family entry (models/family.h).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ftrun::models {

struct TinySpec {
  // A family name (models/family.h: llama, qwen2, mistral, chatglm3, glm4); its entry writes
  // the config.json. chatglm3 and glm4 write model_type "chatglm" with the key set of THUDM's
  // chatglm3-6b / glm-4-9b-chat config.json: intermediate_size becomes ffn_hidden_size,
  // num_key_value_heads multi_query_group_num, hidden/heads kv_channels,
  // max_position_embeddings seq_length.
  std::string model_type = "llama";
  int64_t vocab_size = 0;            // from the tokenizer
  int64_t hidden_size = 64;
  int64_t intermediate_size = 160;
  int64_t num_hidden_layers = 2;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 2;
  int64_t max_position_embeddings = 512;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1, eos_token_id = -1, pad_token_id = -1;
  uint64_t seed = 42;
  // glm4 only: rotary base multiplier (glm-4-9b-chat has 500) and further stop ids written
  // after eos_token_id in its list (glm-4-9b-chat: <|endoftext|>, <|user|>, <|observation|>).
  double rope_ratio = 500.0;
  std::vector<int64_t> extra_eos_token_ids;
};

// The config.json transformers would write for such a model.
nlohmann::json tiny_config(const TinySpec& spec);
// Writes dir/config.json + dir/model.safetensors with random weights from spec.seed.
void write_tiny_model(const std::string& dir, const TinySpec& spec);

}  // namespace ftrun::models
