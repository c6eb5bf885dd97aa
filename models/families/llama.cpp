// Family entry: Llama (Llama-2/3; transformers' LlamaConfig, models/llama.cpp).
#include "models/families/family_parts.h"
#include "models/llama.h"

namespace ftrun::models {

bool llama_unused_tensor(const std::string& name) {
  // Older exports carry each layer's rotary buffer (model.layers.N.self_attn.rotary_emb.inv_freq).
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}

const Family& llama_family() {
  static const Family f = [] {
    Family f;
    f.name = "llama";
    f.model_type = "llama";
    f.read_config = read_llama_config;
    f.build = make_llama;
    f.unused_tensor = llama_unused_tensor;
    f.chat_template = "llama3";
    f.tiny.config = [](const TinySpec& s) { return tiny_llama_config(s, "LlamaForCausalLM"); };
    f.tiny.specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                       "<|eot_id|>"};
    f.tiny.bos = "<|begin_of_text|>";
    f.tiny.eos = "<|eot_id|>";
    f.tiny.pad = "<|end_of_text|>";
    f.tiny.first = "<|begin_of_text|>";
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
