// The bluelm chat template (BlueLM-7B-Chat; its sources in vivo-ai-lab/BlueLM: below).
#include <stdexcept>
#include <string>
#include <vector>

#include "data/templates/builtin.h"

namespace ftrun::data {
namespace {

using templates::append;
using templates::Ids;

// BlueLM-7B-Chat, confirmed from vivo-ai-lab/BlueLM's own code (docs/decisions.md "BlueLM"):
//   - training, train/utils/dataloader.py preprocess_data_function (train/main.py loads the
//     tokenizer with add_bos_token=False and adds it by hand): input_ids = <s> + encode(prompt)
//     + encode(answer) + </s>, the prompt and the answer encoded separately, labels (--finetune,
//     the SFT scripts) only on the answer and </s>; the prompt column holds
//     "[|Human|]:" + question + "[|AI|]:" (train/data/bella_dev_demo.json). One sample is
//     <s>[|Human|]:Q[|AI|]:A</s> with the loss on A</s>.
//   - several turns, cli_demo.py / web_demo.py build_prompt: [|Human|]:Q[|AI|]:A</s> per past
//     turn, then [|Human|]:Q[|AI|]:, tokenised with add_bos_token=True (one <s> in front); no
//     separators. vivo publishes no multi-turn trainer: every assistant reply and its </s> are
//     labelled here, the natural extension of the single-turn rule.
//   - system and tool results, openai_api_demo/api_server.py build_chat_input and
//     cli_demo_tool.py build_prompt (BlueLM-7B-Chat-32K): [|SYSTEM|]:S and [|Function|]:R, plain
//     text (not added tokens); stop ids eos and [|Human|]: (api_server.py).
// [|Human|]: and [|AI|]: are added tokens of BlueLM's tokenizer (added_tokens.json, ids 100000 and
// 100001), so they are taken by id when the tokenizer lists them and encoded as text otherwise.
// Each content is encoded on its own, as the slow HF tokenizer encodes the text between added
// tokens; whether BlueLM's sentencepiece model adds a dummy prefix there depends on its
// tokenizer.model, which ftrun's tokenizer applies as the file says.
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
