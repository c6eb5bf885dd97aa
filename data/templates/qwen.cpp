// The qwen chat template: Qwen2 ChatML (shared/reference/formats.md 5.4).
#include <stdexcept>
#include <string>
#include <vector>

#include "data/templates/builtin.h"

namespace ftrun::data {
namespace {

using templates::append;
using templates::Ids;

const char* const kQwenDefaultSystem = "You are a helpful assistant.";

class QwenTemplate : public ChatTemplate {
 public:
  std::string name() const override { return "qwen"; }

  // <|im_start|>ROLE\n CONTENT <|im_end|>\n per message; Qwen2-Instruct's default system
  // message first when the conversation does not open with one. Trained: each assistant
  // content and its <|im_end|> (the "\n" after it is not). The role line and the content are
  // encoded separately so the label boundary is exact; with Qwen2's regex this equals the
  // whole-text encoding unless the content starts with a newline.
  Sample render(const std::vector<Message>& messages, const Tokenizer& tok) const override {
    Sample s;
    const int64_t end = tok.special_id("<|im_end|>");
    const Ids nl = tok.encode("\n");
    if (!messages.empty() && messages.front().role != "system")
      turn(s, "system", kQwenDefaultSystem, false, tok, end, nl);
    for (const Message& m : messages) {
      if (m.has_tools())
        throw std::runtime_error("the qwen template does not render tool definitions (`tools` on "
                                 "the system message); use glm4 or chatglm3, or drop them");
      if (m.role == "observation") {
        // LLaMA-Factory's qwen template: a tool result is a user turn wrapped in
        // <tool_response> tags (Qwen2's own template has no tool role).
        const std::string wrapped = "<tool_response>\n" + m.content + "\n</tool_response>";
        turn(s, "user", wrapped, false, tok, end, nl);
      } else {
        turn(s, m.role, m.content, m.role == "assistant", tok, end, nl);
      }
    }
    return s;
  }
  std::vector<int64_t> prompt(const std::vector<Message>& messages,
                              const Tokenizer& tok) const override {
    Ids ids = render(messages, tok).input_ids;
    ids.push_back(tok.special_id("<|im_start|>"));
    append(ids, tok.encode("assistant\n"));
    return ids;
  }
  // Qwen2-Instruct's generation_config: eos [<|im_end|>, <|endoftext|>].
  std::vector<int64_t> stop_ids(const Tokenizer& tok) const override {
    Ids ids = {tok.special_id("<|im_end|>")};
    if (tok.has_special("<|endoftext|>")) ids.push_back(tok.special_id("<|endoftext|>"));
    return ids;
  }

 private:
  static void turn(Sample& s, const std::string& role, const std::string& content, bool train,
                   const Tokenizer& tok, int64_t end, const Ids& nl) {
    append(s, {tok.special_id("<|im_start|>")}, false);
    append(s, tok.encode(role + "\n"), false);
    append(s, tok.encode(content), train);
    append(s, {end}, train);
    append(s, nl, false);
  }
};

}  // namespace

std::unique_ptr<ChatTemplate> make_qwen_template() { return std::make_unique<QwenTemplate>(); }

}  // namespace ftrun::data
