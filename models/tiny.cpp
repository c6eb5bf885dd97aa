// Tiny random Llama/Qwen2 models (see tiny.h).
#include "models/tiny.h"

#include <torch/torch.h>

#include "models/model.h"

namespace ftrun::models {

nlohmann::json tiny_config(const TinySpec& s) {
  nlohmann::json j = {
      {"architectures", {s.model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", s.model_type},
      {"vocab_size", s.vocab_size},
      {"hidden_size", s.hidden_size},
      {"intermediate_size", s.intermediate_size},
      {"num_hidden_layers", s.num_hidden_layers},
      {"num_attention_heads", s.num_attention_heads},
      {"num_key_value_heads", s.num_key_value_heads},
      {"head_dim", s.hidden_size / s.num_attention_heads},
      {"max_position_embeddings", s.max_position_embeddings},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"rope_scaling", nullptr},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"hidden_act", "silu"},
      {"initializer_range", 0.02},
      {"tie_word_embeddings", s.tie_word_embeddings},
      {"torch_dtype", "float32"},
      {"use_cache", true},
      {"transformers_version", "4.46.2"},
  };
  j["bos_token_id"] = s.bos_token_id >= 0 ? nlohmann::json(s.bos_token_id) : nlohmann::json();
  j["eos_token_id"] = s.eos_token_id >= 0 ? nlohmann::json(s.eos_token_id) : nlohmann::json();
  if (s.pad_token_id >= 0) j["pad_token_id"] = s.pad_token_id;
  return j;
}

void write_tiny_model(const std::string& dir, const TinySpec& spec) {
  if (spec.vocab_size <= 0) throw std::runtime_error("tiny model: vocab_size must be positive");
  torch::manual_seed(spec.seed);
  auto cfg = parse_model_config(tiny_config(spec), dir + "/config.json");
  auto model = build_model(cfg);
  save_pretrained(*model, dir);
}

}  // namespace ftrun::models
