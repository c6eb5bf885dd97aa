// HF config.json of a causal LM, parsed into the fields the model families need.
// Keys and defaults follow transformers' LlamaConfig / Qwen2Config / MistralConfig / GlmConfig
// / Glm4Config, and THUDM's ChatGLMConfig for model_type "chatglm"; an absent required key or a wrong type is an error naming
// config.json's path and the key.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ftrun::models {

struct RopeScaling {
  std::string type;  // "" (none), "llama3", "linear", "ntkmixed" (BlueLM-7B-Chat-32K)
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  // ntkmixed only: inv_freq[j] /= exp(a * (j + 1)^power), a = ln(int(factor)) / (d/2)^power
  // (vivo-ai-lab/BlueLM example/vllm/.../rotary_embedding.py NTKMixedScalingRotaryEmbedding).
  // Last, so that aggregate initialisers of the fields above keep their meaning.
  double power = 0.0;
};

// The ChatGLM-only options (THUDM configuration_chatglm.py). The shared fields of ModelConfig
// are filled from the GLM keys too (num_layers -> num_hidden_layers, ffn_hidden_size ->
// intermediate_size, kv_channels -> head_dim, multi_query_group_num -> num_key_value_heads,
// padded_vocab_size -> vocab_size, seq_length -> max_position_embeddings, layernorm_epsilon ->
// rms_norm_eps, 10000 * rope_ratio -> rope_theta), so code that only needs sizes stays generic.
struct ChatGLMOptions {
  bool multi_query_attention = false;  // false: fused qkv laid out per head as [q|k|v]
  int64_t multi_query_group_num = 1;
  bool add_bias_linear = false;  // bias on every linear but the output layer
  bool add_qkv_bias = false;     // bias on query_key_value only
  double rope_ratio = 1.0;       // GLM-4: rotary base = 10000 * rope_ratio
  int64_t rotary_dim = 0;        // kv_channels / 2: rotary covers the first half of each head
  bool apply_query_key_layer_scaling = true;  // no effect on the math (see chatglm.cpp)
  bool attention_softmax_in_fp32 = true;
};

struct ModelConfig {
  std::string path;        // the config.json it came from
  std::string model_type;  // "llama", "qwen2", "mistral", "chatglm"
  std::vector<std::string> architectures;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q, k, v and o (Llama)
  bool qkv_bias = false;        // bias on q, k, v only (Qwen2)
  bool mlp_bias = false;
  // Rotary variants of the Llama-class families (models/llama.cpp):
  //   rotary_dim: leading dims of each head that rotate (transformers' partial_rotary_factor *
  //     head_dim; GLM's 0.5), the rest pass through; 0 = all of head_dim.
  //   rope_interleaved: GLM's layout (dims 2i and 2i+1 form a pair, each frequency repeated
  //     twice) instead of Llama's rotate-half (dims i and i + d/2).
  int64_t rotary_dim = 0;
  bool rope_interleaved = false;
  // transformers' GlmMLP naming: one gate_up_proj [2 * intermediate, hidden] (gate rows first)
  // instead of gate_proj and up_proj.
  bool fused_gate_up = false;
  // Glm4DecoderLayer (GLM-4-0414): post_self_attn_layernorm on the attention output and
  // post_mlp_layernorm on the MLP output, each before its residual add.
  bool sandwich_norms = false;
  // Mistral's sliding_window: a query sees only the `sliding_window` most recent slots
  // (itself included); 0 = unlimited.
  int64_t sliding_window = 0;
  // BlueLM's use_stable_embedding: a torch LayerNorm (weight and bias, eps = rms_norm_eps as
  // in vivo's modeling_bluelm.py) on the token embeddings, model.embed_layer_norm.
  bool embed_layer_norm = false;
  std::string hidden_act = "silu";
  std::string torch_dtype = "float32";
  int64_t bos_token_id = -1, pad_token_id = -1;
  std::vector<int64_t> eos_token_id;
  ChatGLMOptions chatglm;  // model_type "chatglm" only
  nlohmann::json raw;  // the whole file, written back unchanged on save
};

ModelConfig load_model_config(const std::string& dir_or_file);
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& path);

// config.json's own name for a ModelConfig field ("vocab_size" or ChatGLM's
// "padded_vocab_size", ...), for errors that must name the key the user would edit.
// `field` is one of vocab_size, hidden_size, intermediate_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, head_dim, max_position_embeddings.
std::string config_key(const ModelConfig& c, const std::string& field);

// The parameter count the family's model class will allocate for `c` (embeddings, lm_head
// unless tied, per layer attention + gated MLP + norms), in double so absurd sizes do not
// overflow. An estimate within a few percent, for the memory check below.
double estimate_parameters(const ModelConfig& c);

// Physical memory plus swap of this machine, in bytes (0 when unknown).
double machine_memory_bytes();

// Refuses, before anything is allocated, a model that cannot fit this machine: "<config.json>:
// the model it describes has ~N parameters (hidden_size H, vocab_size V, ...) and needs ~X GB
// in <dtype_name>; this machine has M GB". bytes_per_param: 4 for fp32, 2 for bf16/fp16.
void check_model_fits_memory(const ModelConfig& c, int bytes_per_param, const std::string& dtype_name);

}  // namespace ftrun::models
