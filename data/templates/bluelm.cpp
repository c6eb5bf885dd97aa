// The bluelm chat template (BlueLM-7B-Chat; its sources and what is unconfirmed: below).
#include <stdexcept>
#include <string>
#include <vector>

#include "data/templates/builtin.h"

namespace ftrun::data {
namespace {

using templates::append;
using templates::Ids;

// BlueLM-7B-Chat. Format from vivo-ai-lab/BlueLM's own scripts (cli_demo.py,
// cli_demo_tool.py, openai_api_demo/api_server.py): the HF tokenizer adds <s>, then
//   [|SYSTEM|]:SYS [|Human|]:Q [|AI|]:A</s> [|Function|]:RESULT ... [|AI|]:
// with no separators, each reply closed by </s>, and stops eos + "[|Human|]:". The markers are
// single tokens in BlueLM's vocabulary (api_server.py converts "[|Human|]:" to one id), so
// they are taken by id when the tokenizer lists them as specials and encoded as text
// otherwise. UNCONFIRMED against the model's own tokenizer files (not available here): that
// <s> is added (add_bos_token), how sentencepiece treats the text right after a marker, and
// [|SYSTEM|]/[|Function|] for BlueLM-7B-Chat (they appear only in the 32K model's tool demo).
class BluelmTemplate : public ChatTemplate {
 public:
  std::string name() const override { return "bluelm"; }

  Sample render(const std::vector<Message>& messages, const Tokenizer& tok) const override {
    Sample s;
    if (tok.bos_id() >= 0) append(s, {tok.bos_id()}, false);
    const int64_t eos = eos_id(tok);
    for (const Message& m : messages) {
      if (m.has_tools())
        throw std::runtime_error("the bluelm template does not render tool definitions (`tools` "
                                 "on the system message); write them into the system content");
      const bool reply = m.role == "assistant";
      append(s, marker(role_marker(m.role), tok), false);
      append(s, tok.encode(m.content), reply);
      if (reply) append(s, {eos}, true);
    }
    return s;
  }
  std::vector<int64_t> prompt(const std::vector<Message>& messages,
                              const Tokenizer& tok) const override {
    Ids ids = render(messages, tok).input_ids;
    append(ids, marker("[|AI|]:", tok));
    return ids;
  }
  std::vector<int64_t> stop_ids(const Tokenizer& tok) const override {
    Ids ids = {eos_id(tok)};
    const Ids human = marker("[|Human|]:", tok);
    if (human.size() == 1) ids.push_back(human[0]);
    return ids;
  }

 private:
  static const char* role_marker(const std::string& role) {
    if (role == "system") return "[|SYSTEM|]:";
    if (role == "user") return "[|Human|]:";
    if (role == "assistant") return "[|AI|]:";
    if (role == "observation") return "[|Function|]:";
    throw std::runtime_error("BlueLM has no role '" + role + "'");
  }
  static Ids marker(const std::string& m, const Tokenizer& tok) {
    return tok.has_special(m) ? Ids{tok.special_id(m)} : tok.encode(m);
  }
  static int64_t eos_id(const Tokenizer& tok) {
    return tok.eos_id() >= 0 ? tok.eos_id() : tok.special_id("</s>");
  }
};

}  // namespace

std::unique_ptr<ChatTemplate> make_bluelm_template() { return std::make_unique<BluelmTemplate>(); }

}  // namespace ftrun::data
