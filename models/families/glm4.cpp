// Family entry: GLM-4 (THUDM's glm-4-9b-chat; model_type "chatglm" like ChatGLM3, whose config
// reader and model class it shares; its tokenizer has <sop> where ChatGLM3's has `sop`).
#include "models/chatglm.h"
#include "models/families/family_parts.h"

namespace ftrun::models {

const Family& glm4_family() {
  static const Family f = [] {
    Family f;
    f.name = "glm4";
    f.model_type = "chatglm";
    f.read_config = read_chatglm_config;
    f.build = make_chatglm;
    f.unused_tensor = chatglm_unused_tensor;
    f.chat_template = "glm4";
    f.tokenizer_marker = "<sop>";
    f.tiny.config = [](const TinySpec& s) { return tiny_chatglm_config(s, true); };
    f.tiny.specials = {"<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                       "<|user|>", "<|assistant|>", "<|observation|>"};
    f.tiny.eos = "<|endoftext|>";
    f.tiny.pad = "<|endoftext|>";
    f.tiny.first = "[gMASK]";
    // glm-4-9b-chat stops on these too.
    f.tiny.extra_eos = {"<|user|>", "<|observation|>"};
    return f;
  }();
  return f;
}

}  // namespace ftrun::models
