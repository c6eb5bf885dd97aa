// Family entry: ChatGLM3 (THUDM's chatglm3-6b; model_type "chatglm", models/chatglm.cpp).
// GLM-4 shares its config reader, model class and unused tensors (families/glm4.cpp).
#include "models/chatglm.h"
#include "models/families/family_parts.h"

namespace ftrun::models {

bool chatglm_unused_tensor(const std::string& name) {
  // Every ChatGLM3 / GLM-4 checkpoint stores transformer.rotary_pos_emb.inv_freq, which THUDM's
  // forward never reads; the Llama-style rotary buffer name has always been skipped too.
  return name == "transformer.rotary_pos_emb.inv_freq" || name.find("rotary_emb.inv_freq") != std::string::npos;
}

const Family& chatglm3_family() {
  static const Family f = [] {
    Family f;
    f.name = "chatglm3";
    f.model_type = "chatglm";
    f.read_config = read_chatglm_config;
    f.build = make_chatglm;
    f.unused_tensor = chatglm_unused_tensor;
    f.chat_template = "chatglm3";
    // No marker: a "chatglm" tokenizer without GLM-4's <sop> is ChatGLM3's (whose start token
    // is `sop`).
    f.tiny.config = [](const TinySpec& s) { return tiny_chatglm_config(s, false); };
    // eos is sentencepiece's </s> (id 2, as in chatglm3-6b).
    f.tiny.specials = {"[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>",
                       "<|observation|>"};
    f.tiny.eos = "</s>";
    f.tiny.pad = "<unk>";
    f.tiny.first = "[gMASK]";
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
