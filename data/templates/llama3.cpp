// The llama3 chat template: Meta-Llama-3-Instruct's format (shared/reference/formats.md 5.1).
#include <stdexcept>
#include <string>
#include <vector>

#include "data/templates/builtin.h"

namespace ftrun::data {
namespace {

using templates::append;
using templates::Ids;

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// Meta-Llama-3-Instruct's template (formats.md 5.1):
//   <|begin_of_text|> { <|start_header_id|>ROLE<|end_header_id|>\n\n trim(CONTENT) <|eot_id|> }*
// No default system message. Trained: each assistant content and the <|eot_id|> closing it.
class Llama3Template : public ChatTemplate {
 public:
  std::string name() const override { return "llama3"; }

  Sample render(const std::vector<Message>& messages, const Tokenizer& tok) const override {
    Sample s;
    append(s, {tok.special_id("<|begin_of_text|>")}, false);
    const int64_t eot = tok.special_id("<|eot_id|>");
    for (const Message& m : messages) {
      if (m.has_tools())
        throw std::runtime_error("the llama3 template does not render tool definitions (`tools` "
                                 "on the system message); use glm4 or chatglm3, or drop them");
      // Tool results take Llama-3.1's `ipython` role, as LLaMA-Factory's llama3 template does.
      append(s, header(m.role == "observation" ? "ipython" : m.role, tok), false);
      const bool train = m.role == "assistant";
      append(s, tok.encode(trim(m.content)), train);
      append(s, {eot}, train);
    }
    return s;
  }

  std::vector<int64_t> prompt(const std::vector<Message>& messages,
                              const Tokenizer& tok) const override {
    std::vector<int64_t> ids = render(messages, tok).input_ids;
    const auto h = header("assistant", tok);
    ids.insert(ids.end(), h.begin(), h.end());
    return ids;
  }

  std::vector<int64_t> stop_ids(const Tokenizer& tok) const override {
    std::vector<int64_t> ids = {tok.special_id("<|eot_id|>"), tok.special_id("<|end_of_text|>")};
    // Llama-3.1+ also ends tool-call turns with <|eom_id|>; Llama-3.0 has no such token.
    if (tok.has_special("<|eom_id|>")) ids.push_back(tok.special_id("<|eom_id|>"));
    return ids;
  }

 private:
  static Ids header(const std::string& role, const Tokenizer& tok) {
    Ids ids = {tok.special_id("<|start_header_id|>")};
    append(ids, tok.encode(role));
    ids.push_back(tok.special_id("<|end_header_id|>"));
    append(ids, tok.encode("\n\n"));
    return ids;
  }
};

}  // namespace

std::unique_ptr<ChatTemplate> make_llama3_template() { return std::make_unique<Llama3Template>(); }

}  // namespace ftrun::data
