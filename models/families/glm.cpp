// Family entries: transformers' native GLM-4 ports, built by the Llama model class
// (models/llama.cpp) with GLM's partial interleaved rotary, q/k/v bias and fused gate_up_proj:
//   glm        glm-4-9b-chat-hf (GlmForCausalLM, model_type "glm", transformers >= 4.46);
//   glm4-0414  GLM-4-9B-0414 / GLM-4-32B-0414 (Glm4ForCausalLM, model_type "glm4",
//              transformers >= 4.51): the same plus post_self_attn_layernorm and
//              post_mlp_layernorm.
// THUDM's remote-code glm-4-9b-chat (model_type "chatglm") stays the glm4 entry (glm4.cpp).
#include "models/families/family_parts.h"
#include "models/llama.h"

namespace ftrun::models {
namespace {

// glm-4-9b-chat-hf's tokenizer specials (the ids order of glm-4-9b-chat's) and its stop list.
void glm_tiny_tokens(TinyRecipe& t) {
  t.specials = {"<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                "<|user|>", "<|assistant|>", "<|observation|>"};
  t.eos = "<|endoftext|>";
  t.pad = "<|endoftext|>";
  t.first = "[gMASK]";
  t.extra_eos = {"<|user|>", "<|observation|>"};
}

nlohmann::json tiny_glm_config(const TinySpec& s, bool glm4) {
  auto j = tiny_llama_config(s, glm4 ? "Glm4ForCausalLM" : "GlmForCausalLM");
  j["model_type"] = glm4 ? "glm4" : "glm";
  j.erase("mlp_bias");  // not a GlmConfig key
  j["attention_bias"] = true;
  j["partial_rotary_factor"] = 0.5;
  j["rms_norm_eps"] = 1.5625e-07;
  j["rope_theta"] = 10000.0;
  j["transformers_version"] = glm4 ? "4.51.3" : "4.46.2";  // the first release with the class
  j["eos_token_id"] = nlohmann::json::array();
  if (s.eos_token_id >= 0) j["eos_token_id"].push_back(s.eos_token_id);
  for (auto id : s.extra_eos_token_ids) j["eos_token_id"].push_back(id);
  return j;
}

// Both entries differ only in the Glm4 switch (the extra norms) and their names; a template
// parameter because the registry holds plain function pointers (captureless lambdas).
template <bool Glm4>
Family glm_entry(const char* name, const char* model_type) {
  Family f;
  f.name = name;
  f.model_type = model_type;
  f.read_config = [](const nlohmann::json& j, const std::string& path, ModelConfig& c) {
    read_glm_config(j, path, c, Glm4);
  };
  f.build = make_llama;
  f.unused_tensor = llama_unused_tensor;
  // glm-4-9b-chat-hf's chat_template is glm-4-9b-chat's; GLM-4-0414's is taken to be the same
  // (docs/decisions.md).
  f.chat_template = "glm4";
  f.tiny.config = [](const TinySpec& s) { return tiny_glm_config(s, Glm4); };
  glm_tiny_tokens(f.tiny);
  return f;
}

}  // namespace

const Family& glm_family() {
  static const Family f = glm_entry<false>("glm", "glm");
  return f;
}

const Family& glm4_0414_family() {
  static const Family f = glm_entry<true>("glm4-0414", "glm4");
  return f;
}

}  // namespace ftrun::models
