// Tiny random models of any registered family (see tiny.h); the config.json key sets the
// family entries pick from (models/families/).
#include "models/tiny.h"

#include <torch/torch.h>

#include <cmath>

#include "models/families/family_parts.h"
#include "models/family.h"
#include "models/model.h"

namespace ftrun::models {

// THUDM's config.json key set (chatglm3-6b, glm-4-9b-chat) with tiny sizes. GLM-4 adds
// rope_ratio, num_hidden_layers beside num_layers, and a list of stop ids as eos_token_id.
nlohmann::json tiny_chatglm_config(const TinySpec& s, bool glm4) {
  if (s.num_attention_heads <= 0 || s.hidden_size % s.num_attention_heads != 0)
    throw std::runtime_error("tiny model: hidden_size must be a multiple of num_attention_heads");
  nlohmann::json auto_map = {
      {"AutoConfig", "configuration_chatglm.ChatGLMConfig"},
      {"AutoModel", "modeling_chatglm.ChatGLMForConditionalGeneration"},
      {"AutoModelForCausalLM", "modeling_chatglm.ChatGLMForConditionalGeneration"},
      {"AutoModelForSeq2SeqLM", "modeling_chatglm.ChatGLMForConditionalGeneration"}};
  if (glm4)
    auto_map["AutoModelForSequenceClassification"] = "modeling_chatglm.ChatGLMForSequenceClassification";
  nlohmann::json j = {
      {"_name_or_path", glm4 ? "THUDM/glm-4-9b-chat" : "THUDM/chatglm3-6b"},
      {"model_type", "chatglm"},
      {"architectures", {"ChatGLMModel"}},
      {"auto_map", auto_map},
      {"add_bias_linear", false},
      {"add_qkv_bias", true},
      {"apply_query_key_layer_scaling", true},
      {"apply_residual_connection_post_layernorm", false},
      {"attention_dropout", 0.0},
      {"attention_softmax_in_fp32", true},
      {"bias_dropout_fusion", true},
      {"ffn_hidden_size", s.intermediate_size},
      {"fp32_residual_connection", false},
      {"hidden_dropout", 0.0},
      {"hidden_size", s.hidden_size},
      {"kv_channels", s.hidden_size / s.num_attention_heads},
      {"layernorm_epsilon", glm4 ? 1.5625e-07 : 1e-05},
      {"multi_query_attention", true},
      {"multi_query_group_num", s.num_key_value_heads},
      {"num_attention_heads", s.num_attention_heads},
      {"num_layers", s.num_hidden_layers},
      {"original_rope", true},
      {"padded_vocab_size", s.vocab_size},
      {"post_layer_norm", true},
      {"rmsnorm", true},
      {"seq_length", s.max_position_embeddings},
      {"use_cache", true},
      {"torch_dtype", "float32"},
      {"transformers_version", glm4 ? "4.44.0" : "4.30.2"},
      {"tie_word_embeddings", false},
  };
  if (glm4) {
    j["num_hidden_layers"] = s.num_hidden_layers;
    // Written as the integer the real file has when it is one (glm-4-9b-chat: 500).
    if (s.rope_ratio == std::floor(s.rope_ratio) && std::abs(s.rope_ratio) < 1e15)
      j["rope_ratio"] = static_cast<int64_t>(s.rope_ratio);
    else
      j["rope_ratio"] = s.rope_ratio;
    nlohmann::json eos = nlohmann::json::array();
    if (s.eos_token_id >= 0) eos.push_back(s.eos_token_id);
    for (auto id : s.extra_eos_token_ids) eos.push_back(id);
    j["eos_token_id"] = eos;
  } else {
    j["eos_token_id"] = s.eos_token_id >= 0 ? nlohmann::json(s.eos_token_id) : nlohmann::json();
  }
  if (s.pad_token_id >= 0) j["pad_token_id"] = s.pad_token_id;
  return j;
}

nlohmann::json tiny_llama_config(const TinySpec& s, const std::string& architecture) {
  nlohmann::json j = {
      {"architectures", {architecture}},
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

nlohmann::json tiny_config(const TinySpec& s) {
  const Family* f = find_family(s.model_type);
  if (f && f->tiny.config) return f->tiny.config(s);
  // No such family: LlamaConfig's key set under that model_type, as always, so that
  // parse_model_config() names the type in its error.
  return tiny_llama_config(s, "LlamaForCausalLM");
}

void write_tiny_model(const std::string& dir, const TinySpec& spec) {
  if (spec.vocab_size <= 0) throw std::runtime_error("tiny model: vocab_size must be positive");
  torch::manual_seed(spec.seed);
  auto cfg = parse_model_config(tiny_config(spec), dir + "/config.json");
  auto model = build_model(cfg);
  save_pretrained(*model, dir);
}

}  // namespace ftrun::models
