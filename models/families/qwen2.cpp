// Family entry: Qwen2 (transformers' Qwen2Config; the Llama model class with q/k/v biases).
#include <stdexcept>

#include "models/families/family_parts.h"
#include "models/llama.h"

namespace ftrun::models {

const Family& qwen2_family() {
  static const Family f = [] {
    Family f;
    f.name = "qwen2";
    f.model_type = "qwen2";
    f.read_config = [](const nlohmann::json& j, const std::string& path, ModelConfig& c) {
      read_llama_config(j, path, c);
      // Qwen2's modeling file hard-codes bias on q/k/v and none on o.
      c.qkv_bias = true;
      // Released Qwen2 / Qwen2.5 configs say false. True would window only the layers from
      // max_window_layers on (transformers' flash-attention path): not implemented, so refused
      // rather than trained with other attention.
      if (j.contains("use_sliding_window") && j["use_sliding_window"] == true)
        throw std::runtime_error(path + ": 'use_sliding_window': true is not supported (Qwen2's per-layer sliding "
                                        "window is not implemented); set it to false");
    };
    f.build = make_llama;
    f.unused_tensor = llama_unused_tensor;
    f.chat_template = "qwen";
    f.tiny.config = [](const TinySpec& s) { return tiny_llama_config(s, "Qwen2ForCausalLM"); };
    f.tiny.specials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    f.tiny.eos = "<|im_end|>";
    f.tiny.pad = "<|endoftext|>";
    f.tiny.first = "<|im_start|>";
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
