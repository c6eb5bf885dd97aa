// Parses HF config.json into ModelConfig, with transformers' (or, for ChatGLM, THUDM's
// ChatGLMConfig's) defaults for absent keys. The two key sets ftrun reads (transformers'
// LlamaConfig family and THUDM's ChatGLMConfig) are defined here; which one a config.json gets
// is its family entry's choice (models/family.h).
#include "models/config.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "io/file.h"
#include "models/families/family_parts.h"
#include "models/family.h"

namespace fs = std::filesystem;

namespace ftrun::models {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

int64_t get_int(const nlohmann::json& j, const std::string& path, const char* key,
                int64_t dflt, bool required = false) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail(path, std::string("missing required key '") + key + "'");
    return dflt;
  }
  if (!j[key].is_number_integer())
    fail(path, std::string("'") + key + "' must be an integer, got " + j[key].dump());
  return j[key].get<int64_t>();
}

double get_double(const nlohmann::json& j, const std::string& path, const char* key,
                  double dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_number()) fail(path, std::string("'") + key + "' must be a number, got " + j[key].dump());
  return j[key].get<double>();
}

bool get_bool(const nlohmann::json& j, const std::string& path, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean()) fail(path, std::string("'") + key + "' must be true or false, got " + j[key].dump());
  return j[key].get<bool>();
}

std::vector<int64_t> get_ids(const nlohmann::json& j, const std::string& path, const char* key) {
  std::vector<int64_t> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  if (j[key].is_number_integer()) return {j[key].get<int64_t>()};
  if (!j[key].is_array()) fail(path, std::string("'") + key + "' must be an integer or a list of integers");
  for (const auto& v : j[key]) {
    if (!v.is_number_integer()) fail(path, std::string("'") + key + "' must hold integers only");
    out.push_back(v.get<int64_t>());
  }
  return out;
}

// A ChatGLMConfig option ftrun does not implement: accepted only at its supported value.
void require_bool(const nlohmann::json& j, const std::string& path, const char* key, bool dflt,
                  bool supported, const std::string& why) {
  if (get_bool(j, path, key, dflt) != supported)
    fail(path, std::string("'") + key + "': " + (supported ? "false" : "true") +
                   " is not supported by ftrun's ChatGLM model (" + why + ")");
}

// Keys every family reads the same way.
void read_common(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string())
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  auto bos = get_ids(j, path, "bos_token_id");
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  auto pad = get_ids(j, path, "pad_token_id");
  c.pad_token_id = pad.empty() ? -1 : pad[0];
  c.eos_token_id = get_ids(j, path, "eos_token_id");
}

// model_type "chatglm": THUDM's ChatGLMConfig (ChatGLM2/3, GLM-4). Defaults are that class's
// constructor defaults; the size keys are required because its defaults (the 6B sizes)
// would silently build the wrong model from an incomplete file.
void parse_chatglm(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  auto& g = c.chatglm;
  c.num_hidden_layers = get_int(j, path, "num_layers", 0, true);
  c.hidden_size = get_int(j, path, "hidden_size", 0, true);
  c.intermediate_size = get_int(j, path, "ffn_hidden_size", 0, true);
  c.num_attention_heads = get_int(j, path, "num_attention_heads", 0, true);
  c.head_dim = get_int(j, path, "kv_channels", 0, true);
  // ChatGLMConfig sets vocab_size = padded_vocab_size; embedding and output layer use it.
  c.vocab_size = get_int(j, path, "padded_vocab_size", 0, true);
  if (c.num_hidden_layers <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 ||
      c.num_attention_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0)
    fail(path, "num_layers, hidden_size, ffn_hidden_size, num_attention_heads, kv_channels and "
               "padded_vocab_size must be positive");
  if (c.head_dim % 4 != 0)
    fail(path, "'kv_channels' must be a multiple of 4 (rotary covers kv_channels/2 features in pairs), got " +
                   std::to_string(c.head_dim));
  g.rotary_dim = c.head_dim / 2;
  g.multi_query_attention = get_bool(j, path, "multi_query_attention", false);
  g.multi_query_group_num = get_int(j, path, "multi_query_group_num", 1);
  c.num_key_value_heads = g.multi_query_attention ? g.multi_query_group_num : c.num_attention_heads;
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    fail(path, "'num_attention_heads' (" + std::to_string(c.num_attention_heads) +
                   ") must be a multiple of 'multi_query_group_num' (" + std::to_string(c.num_key_value_heads) + ")");
  c.max_position_embeddings = get_int(j, path, "seq_length", 2048);
  if (c.max_position_embeddings <= 0) fail(path, "'seq_length' must be positive");
  c.rms_norm_eps = get_double(j, path, "layernorm_epsilon", 1e-5);
  g.rope_ratio = get_double(j, path, "rope_ratio", 1.0);  // absent in ChatGLM3-6B
  if (!(g.rope_ratio > 0)) fail(path, "'rope_ratio' must be positive");
  c.rope_theta = 10000.0 * g.rope_ratio;
  g.add_bias_linear = get_bool(j, path, "add_bias_linear", false);
  g.add_qkv_bias = get_bool(j, path, "add_qkv_bias", false);
  c.qkv_bias = g.add_bias_linear || g.add_qkv_bias;
  c.attention_bias = g.add_bias_linear;
  c.mlp_bias = g.add_bias_linear;
  g.apply_query_key_layer_scaling = get_bool(j, path, "apply_query_key_layer_scaling", true);
  g.attention_softmax_in_fp32 = get_bool(j, path, "attention_softmax_in_fp32", true);
  // Read for their type only: bias_dropout_fusion is a kernel choice, and original_rope is
  // stored by RotaryEmbedding but never read by its forward (the GLM pair layout is used
  // either way), so neither changes the math.
  get_bool(j, path, "bias_dropout_fusion", true);
  get_bool(j, path, "original_rope", true);
  require_bool(j, path, "rmsnorm", true, true, "only RMSNorm is implemented, not LayerNorm");
  require_bool(j, path, "apply_residual_connection_post_layernorm", false, false,
               "the residual must be taken before the layer norms");
  require_bool(j, path, "post_layer_norm", true, true, "the model needs encoder.final_layernorm");
  require_bool(j, path, "fp32_residual_connection", false, false, "residuals stay in the model dtype");
  for (const char* k : {"hidden_dropout", "attention_dropout"})
    if (get_double(j, path, k, 0.0) != 0.0)
      fail(path, std::string("'") + k + "' must be 0 (ftrun does not apply dropout inside the model)");
  if (j.contains("pre_seq_len") && !j["pre_seq_len"].is_null())
    fail(path, "'pre_seq_len' (the THUDM code's built-in prefix encoder) is not supported; leave it null "
               "and use peft_config with peft_type PREFIX_TUNING instead");
  if (get_int(j, path, "quantization_bit", 0) != 0)
    fail(path, "'quantization_bit' must be 0 (quantized ChatGLM checkpoints are not supported)");
  // The output layer is a separate matrix; ChatGLM never ties it to the embedding.
  c.tie_word_embeddings = false;
}

}  // namespace

void read_chatglm_config(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  parse_chatglm(j, path, c);
  read_common(j, path, c);
}

// transformers' LlamaConfig key set, which Qwen2Config and MistralConfig share.
void read_llama_config(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  c.vocab_size = get_int(j, path, "vocab_size", 0, true);
  c.hidden_size = get_int(j, path, "hidden_size", 0, true);
  c.intermediate_size = get_int(j, path, "intermediate_size", 0, true);
  c.num_hidden_layers = get_int(j, path, "num_hidden_layers", 0, true);
  c.num_attention_heads = get_int(j, path, "num_attention_heads", 0, true);
  c.num_key_value_heads = get_int(j, path, "num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads <= 0 || c.hidden_size <= 0 || c.vocab_size <= 0 ||
      c.num_hidden_layers <= 0 || c.intermediate_size <= 0)
    fail(path, "vocab_size, hidden_size, intermediate_size, num_hidden_layers and "
               "num_attention_heads must be positive");
  c.head_dim = get_int(j, path, "head_dim", c.hidden_size / c.num_attention_heads);
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    fail(path, "num_attention_heads (" + std::to_string(c.num_attention_heads) +
                   ") must be a multiple of num_key_value_heads (" +
                   std::to_string(c.num_key_value_heads) + ")");
  if (c.head_dim % 2 != 0) fail(path, "head_dim must be even for rotary embeddings");
  c.max_position_embeddings = get_int(j, path, "max_position_embeddings", 2048);
  c.rms_norm_eps = get_double(j, path, "rms_norm_eps", 1e-6);
  c.rope_theta = get_double(j, path, "rope_theta", 10000.0);
  // The rotary base: zero, negative or inf makes NaN angles and a NaN loss from step 1 (issue 16).
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    fail(path, "'rope_theta' must be a positive number (the rotary base), got " + j["rope_theta"].dump());
  c.tie_word_embeddings = get_bool(j, path, "tie_word_embeddings", false);
  c.attention_bias = get_bool(j, path, "attention_bias", false);
  c.mlp_bias = get_bool(j, path, "mlp_bias", false);
  if (j.contains("hidden_act") && j["hidden_act"].is_string())
    c.hidden_act = j["hidden_act"].get<std::string>();
  if (c.hidden_act != "silu" && c.hidden_act != "swish")
    fail(path, "hidden_act '" + c.hidden_act + "' is not supported (expected \"silu\")");
  read_common(j, path, c);

  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const auto& rs = j["rope_scaling"];
    if (!rs.is_object()) fail(path, "'rope_scaling' must be an object or null");
    std::string type;
    if (rs.contains("rope_type") && rs["rope_type"].is_string()) type = rs["rope_type"];
    else if (rs.contains("type") && rs["type"].is_string()) type = rs["type"];
    if (type == "default") type = "";
    if (type != "" && type != "llama3" && type != "linear")
      fail(path, "rope_scaling type '" + type + "' is not supported (expected llama3 or linear)");
    c.rope_scaling.type = type;
    c.rope_scaling.factor = get_double(rs, path, "factor", 1.0);
    c.rope_scaling.low_freq_factor = get_double(rs, path, "low_freq_factor", 1.0);
    c.rope_scaling.high_freq_factor = get_double(rs, path, "high_freq_factor", 4.0);
    c.rope_scaling.original_max_position_embeddings =
        get_int(rs, path, "original_max_position_embeddings", 8192);
  }
}

void read_mistral_config(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  read_llama_config(j, path, c);
  // MistralConfig's default is a 4,096-slot window; null (Mistral-7B v0.2 and later) means none.
  if (!j.contains("sliding_window")) {
    c.sliding_window = 4096;
  } else if (!j["sliding_window"].is_null()) {
    c.sliding_window = get_int(j, path, "sliding_window", 0);
    if (c.sliding_window <= 0)
      fail(path, "'sliding_window' must be a positive number of tokens or null, got " + j["sliding_window"].dump());
  }
}

void read_glm_config(const nlohmann::json& j, const std::string& path, ModelConfig& c, bool glm4) {
  // GlmConfig / Glm4Config defaults where they differ from LlamaConfig's (transformers writes
  // every key, so these matter only for hand-written files).
  nlohmann::json d = j;
  for (auto [key, value] : {std::pair<const char*, nlohmann::json>{"head_dim", 128},
                            {"rms_norm_eps", 1.5625e-07},
                            {"attention_bias", true},
                            {"max_position_embeddings", 131072}})
    if (!d.contains(key)) d[key] = value;
  read_llama_config(d, path, c);
  // GlmAttention: attention_bias puts a bias on q, k and v only (o_proj never has one), and
  // the MLP has none (GlmConfig has no mlp_bias).
  c.qkv_bias = c.attention_bias;
  c.attention_bias = false;
  if (c.mlp_bias) fail(path, "'mlp_bias' is not a GlmConfig key: transformers' GLM MLP has no bias");
  const double factor = get_double(j, path, "partial_rotary_factor", 0.5);
  // transformers: dim = int(head_dim * partial_rotary_factor), frequencies over that dim.
  c.rotary_dim = int64_t(double(c.head_dim) * factor);
  if (!(factor > 0 && factor <= 1) || c.rotary_dim < 2 || c.rotary_dim % 2 != 0)
    fail(path, "'partial_rotary_factor' must be in (0, 1] and give an even rotary dimension (head_dim " +
                   std::to_string(c.head_dim) + " x " + j.value("partial_rotary_factor", nlohmann::json(0.5)).dump() +
                   " = " + std::to_string(c.rotary_dim) + ")");
  c.rope_interleaved = true;
  c.fused_gate_up = true;
  c.sandwich_norms = glm4;
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) fail(path, "config must be a JSON object");
  ModelConfig c;
  c.path = path;
  c.raw = j;
  if (!j.contains("model_type") || !j["model_type"].is_string())
    fail(path, "missing required key 'model_type' (a string such as \"llama\")");
  c.model_type = j["model_type"].get<std::string>();
  if (j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"])
      if (a.is_string()) c.architectures.push_back(a.get<std::string>());
  if (const Family* f = buildable_family(c.model_type)) {
    f->read_config(j, path, c);
    return c;
  }
  // An unknown model_type is still read as the LlamaConfig key set first, as it always was,
  // so a file with a bad key reports that key before the type.
  read_llama_config(j, path, c);
  fail(path, "model_type '" + c.model_type + "' is not supported yet (supported: " + supported_model_types() + ")");
}

ModelConfig load_model_config(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  if (fs::is_directory(p)) p /= "config.json";
  auto j = io::read_json_file(p, "(expected an HF model directory with config.json)");
  return parse_model_config(j, p.string());
}

std::string config_key(const ModelConfig& c, const std::string& field) {
  // The ChatGLM key set names the shared fields differently (config.h, ChatGLMOptions).
  // parse_chatglm is the only reader that sets rotary_dim (always > 0 there), so it tells
  // which set this file was read with (a GLM file may carry num_hidden_layers beside
  // num_layers, but num_layers is the one read).
  const bool glm_keys = c.chatglm.rotary_dim > 0;
  static const std::vector<std::pair<std::string, std::string>> glm = {
      {"vocab_size", "padded_vocab_size"},         {"intermediate_size", "ffn_hidden_size"},
      {"num_hidden_layers", "num_layers"},         {"num_key_value_heads", "multi_query_group_num"},
      {"head_dim", "kv_channels"},                 {"max_position_embeddings", "seq_length"}};
  for (const auto& [hf, other] : glm) {
    if (field != hf) continue;
    if (glm_keys) return other;
  }
  return field;
}

double estimate_parameters(const ModelConfig& c) {
  const double V = double(c.vocab_size), H = double(c.hidden_size), I = double(c.intermediate_size);
  const double L = double(c.num_hidden_layers), nh = double(c.num_attention_heads);
  const double nkv = double(c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads);
  const double hd = double(c.head_dim > 0 ? c.head_dim : (c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0));
  // q and o: H x nh*hd each; k and v: H x nkv*hd each; gate, up and down: H x I each.
  const double per_layer = 2 * H * nh * hd + 2 * H * nkv * hd + 3 * H * I + 2 * H;
  return V * H * (c.tie_word_embeddings ? 1 : 2) + L * per_layer + H;
}

double machine_memory_bytes() {
  // /proc/meminfo's MemTotal + SwapTotal (kB); sysconf's physical pages when it is absent.
  double total = 0;
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream is(line);
    std::string key;
    double kb = 0;
    if (is >> key >> kb && (key == "MemTotal:" || key == "SwapTotal:")) total += kb * 1024.0;
  }
  if (total > 0) return total;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? double(pages) * double(page) : 0;
}

void check_model_fits_memory(const ModelConfig& c, int bytes_per_param, const std::string& dtype_name) {
  const double params = estimate_parameters(c), needs = params * bytes_per_param, has = machine_memory_bytes();
  if (has <= 0 || needs <= has) return;
  char buf[512];
  std::snprintf(buf, sizeof buf, "the model it describes has ~%.3g parameters and needs ~%.3g GB in %s; this machine has %.1f GB",
                params, needs / 1e9, dtype_name.c_str(), has / 1e9);
  std::ostringstream os;
  os << buf << " (" << config_key(c, "hidden_size") << " " << c.hidden_size << ", " << config_key(c, "vocab_size")
     << " " << c.vocab_size << ", " << config_key(c, "intermediate_size") << " " << c.intermediate_size << ", "
     << config_key(c, "num_hidden_layers") << " " << c.num_hidden_layers << ", " << config_key(c, "num_attention_heads")
     << " " << c.num_attention_heads << ")";
  fail(c.path, os.str());
}

}  // namespace ftrun::models
