// Family entry: Mistral (transformers' MistralConfig; the Llama model class). ftrun has no
// Mistral chat template yet (set chat_template), and make-tiny-model does not offer it.
#include "models/families/family_parts.h"
#include "models/llama.h"

namespace ftrun::models {

const Family& mistral_family() {
  static const Family f = [] {
    Family f;
    f.name = "mistral";
    f.model_type = "mistral";
    f.read_config = read_mistral_config;
    f.build = make_llama;
    f.unused_tensor = llama_unused_tensor;
    // The tiny config keeps LlamaForCausalLM, as tiny_config always wrote for it.
    f.tiny.config = [](const TinySpec& s) { return tiny_llama_config(s, "LlamaForCausalLM"); };
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
