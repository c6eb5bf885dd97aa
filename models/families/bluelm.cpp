// Family entry: BlueLM (vivo-ai-lab/BlueLM; config.json says model_type "BlueLM",
// BlueLMForCausalLM, remote code only). Built by the Llama model class (models/llama.cpp):
// vivo's modeling_bluelm.py is Llama's math (RMSNorm, rotate-half RoPE, SwiGLU, separate
// q/k/v/o without bias, untied lm_head) plus two switches read here:
//   use_stable_embedding  a torch LayerNorm (weight and bias, eps = rms_norm_eps) on the
//                         token embeddings, model.embed_layer_norm (ModelConfig::embed_layer_norm);
//   rope_scaling ntkmixed BlueLM-7B-Chat-32K's static NTK-mixed rotary frequencies
//                         (vivo's example/vllm rotary_embedding.py NTKMixedScalingRotaryEmbedding).
// Sources and the choices made where they disagree: docs/decisions.md, "BlueLM".
#include <cmath>
#include <stdexcept>

#include "models/families/family_parts.h"
#include "models/llama.h"

namespace ftrun::models {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// vivo's BlueLMConfig (example/vllm/vllm/transformers_utils/configs/bluelm.py, the 32K-era
// class): LlamaConfig's key set without head_dim and biases, plus use_stable_embedding
// (default true) and a rope_scaling of exactly {type, factor, power}.
void read_bluelm_config(const nlohmann::json& j, const std::string& path, ModelConfig& c) {
  nlohmann::json d = j;
  d.erase("rope_scaling");  // BlueLM's own types, read below
  read_llama_config(d, path, c);
  // modeling_bluelm.py hard-codes bias=False and head_dim = hidden_size / num_attention_heads.
  if (c.attention_bias) fail(path, "'attention_bias' is not a BlueLMConfig key: BlueLM's projections have no bias");
  if (c.mlp_bias) fail(path, "'mlp_bias' is not a BlueLMConfig key: BlueLM's MLP has no bias");
  if (c.head_dim * c.num_attention_heads != c.hidden_size)
    fail(path, "'head_dim' is not a BlueLMConfig key: BlueLM's head_dim is hidden_size / num_attention_heads (" +
                   std::to_string(c.hidden_size / c.num_attention_heads) + ")");
  if (j.contains("use_stable_embedding") && !j["use_stable_embedding"].is_null()) {
    if (!j["use_stable_embedding"].is_boolean())
      fail(path, "'use_stable_embedding' must be true or false, got " + j["use_stable_embedding"].dump());
    c.embed_layer_norm = j["use_stable_embedding"].get<bool>();
  } else {
    c.embed_layer_norm = true;  // BlueLMConfig's default
  }

  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return;
  const auto& rs = j["rope_scaling"];
  if (!rs.is_object()) fail(path, "'rope_scaling' must be an object or null");
  for (const auto& item : rs.items())
    if (item.key() != "type" && item.key() != "factor" && item.key() != "power")
      fail(path, "rope_scaling key '" + item.key() +
                     "' is not supported for BlueLM (expected exactly type \"ntkmixed\", factor and power)");
  for (const char* k : {"type", "factor", "power"})
    if (!rs.contains(k) || rs[k].is_null())
      fail(path, std::string("rope_scaling is missing '") + k +
                     "' (BlueLM's ntkmixed scaling needs exactly type, factor and power)");
  if (!rs["type"].is_string() || rs["type"].get<std::string>() != "ntkmixed")
    fail(path, "rope_scaling type " + rs["type"].dump() +
                   " is not supported for BlueLM (expected \"ntkmixed\", BlueLM-7B-Chat-32K's; vivo's linear and "
                   "dynamic variants are used by no released checkpoint)");
  if (!rs["factor"].is_number() || !(rs["factor"].get<double>() >= 2) || !std::isfinite(rs["factor"].get<double>()))
    fail(path, "rope_scaling 'factor' must be a number >= 2 (int(factor) is the scale), got " + rs["factor"].dump());
  if (!rs["power"].is_number() || !std::isfinite(rs["power"].get<double>()) || !(rs["power"].get<double>() > 0))
    fail(path, "rope_scaling 'power' must be a positive number, got " + rs["power"].dump());
  c.rope_scaling.type = "ntkmixed";
  c.rope_scaling.factor = rs["factor"].get<double>();
  c.rope_scaling.power = rs["power"].get<double>();
}

// The config.json of BlueLM-7B's hub repos at tiny sizes. Every released BlueLM has as many
// key/value heads as heads (vivo's HF modeling code has no GQA), so the tiny one has too.
nlohmann::json tiny_bluelm_config(const TinySpec& s) {
  if (s.num_attention_heads <= 0 || s.hidden_size % s.num_attention_heads != 0)
    throw std::runtime_error("tiny model: hidden_size must be a multiple of num_attention_heads");
  nlohmann::json j = {
      {"architectures", {"BlueLMForCausalLM"}},
      {"auto_map",
       {{"AutoConfig", "configuration_bluelm.BlueLMConfig"},
        {"AutoModelForCausalLM", "modeling_bluelm.BlueLMForCausalLM"}}},
      {"model_type", "BlueLM"},
      {"vocab_size", s.vocab_size},
      {"hidden_size", s.hidden_size},
      {"intermediate_size", s.intermediate_size},
      {"num_hidden_layers", s.num_hidden_layers},
      {"num_attention_heads", s.num_attention_heads},
      {"num_key_value_heads", s.num_attention_heads},
      {"hidden_act", "silu"},
      {"max_position_embeddings", s.max_position_embeddings},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"rope_scaling", nullptr},
      {"use_stable_embedding", true},
      {"initializer_range", 0.02},
      {"pretraining_tp", 1},
      {"tie_word_embeddings", s.tie_word_embeddings},
      {"torch_dtype", "float32"},
      {"use_cache", true},
  };
  j["bos_token_id"] = s.bos_token_id >= 0 ? nlohmann::json(s.bos_token_id) : nlohmann::json();
  j["eos_token_id"] = s.eos_token_id >= 0 ? nlohmann::json(s.eos_token_id) : nlohmann::json();
  if (s.pad_token_id >= 0) j["pad_token_id"] = s.pad_token_id;
  return j;
}

}  // namespace

const Family& bluelm_family() {
  static const Family f = [] {
    Family f;
    f.name = "bluelm";
    // config.json's spelling: buildable_family() compares exactly, default_template()
    // case-insensitively.
    f.model_type = "BlueLM";
    f.read_config = read_bluelm_config;
    f.build = make_llama;
    f.unused_tensor = llama_unused_tensor;  // rotary_emb.inv_freq, as vivo's vLLM loader skips
    f.chat_template = "bluelm";
    f.tiny.config = tiny_bluelm_config;
    // BlueLM's ids: <unk> 0, <s> 1, </s> 2 (sentencepiece's own), <pad> 3, then the chat
    // markers [|Human|]: and [|AI|]: (100000, 100001); the tiny tokenizer appends <pad> and
    // the markers in that order after its pieces.
    f.tiny.specials = {"<pad>", "[|Human|]:", "[|AI|]:"};
    f.tiny.bos = "<s>";
    f.tiny.eos = "</s>";
    f.tiny.pad = "<pad>";
    // Pre-training samples start with the user marker: make-tiny-model names the first
    // token by special_id(), and <s> is a sentencepiece piece, not an added token.
    f.tiny.first = "[|Human|]:";
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
