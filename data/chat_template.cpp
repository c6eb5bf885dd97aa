// Chat templates: make_template() over the built-in templates (one file each in
// data/templates/) and encode_example(), which renders or takes one example and cuts it.
//
// How every template renders: at the token level. Rendering works at the token level: special tokens are inserted by id and each text segment
// (role name, separator, content) is encoded on its own, then the ids are concatenated. This
// keeps user text that spells "<|eot_id|>" from ever becoming a control token, and makes the
// label mask exact (no re-alignment of offsets). The price is that segment boundaries are also
// token boundaries; with the tokenizers ftrun trains (no sentencepiece dummy prefix) the
// decoded text is still exactly the HF template's text. A foreign sentencepiece model with
// add_dummy_prefix=true puts a "▁" at the start of every segment, as ChatGLM3's own
// tokenizer does when it encodes its template piecewise.
#include "data/chat_template.h"

#include <algorithm>
#include <stdexcept>

#include "data/templates/builtin.h"
#include "models/family.h"

namespace ftrun::data {
namespace {

using templates::kIgnore;

void check_ids(const std::vector<int64_t>& ids, const char* field, bool allow_ignore,
               const Example& ex, const Tokenizer& tok) {
  const int64_t n = tok.vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    if ((id < 0 || id >= n) && !(allow_ignore && id == kIgnore))
      throw std::runtime_error(ex.where + ": " + field + "[" + std::to_string(i) + "] = " +
                               std::to_string(id) + " is outside the tokenizer's vocabulary [0, " +
                               std::to_string(n) + ")" + (allow_ignore ? " and is not -100" : ""));
  }
}

}  // namespace

std::unique_ptr<ChatTemplate> make_template(const std::string& name) {
  if (name == "llama3") return make_llama3_template();
  if (name == "glm4") return make_glm4_template();
  if (name == "chatglm3") return make_chatglm3_template();
  if (name == "qwen") return make_qwen_template();
  if (name == "bluelm") return make_bluelm_template();
  throw std::runtime_error("unknown chat template '" + name +
                           "' (known: llama3, glm4, chatglm3, qwen, bluelm)");
}

std::string template_for_model(const std::string& model_type, const Tokenizer& tok) {
  // The model family's entry knows its template (ChatGLM3 and GLM-4 both say "chatglm"; the
  // registry tells them apart by the tokenizer's start token).
  std::string name =
      models::default_template(model_type, [&](const std::string& token) { return tok.has_special(token); });
  return name.empty() ? model_type : name;
}

namespace {

Sample encode_impl(const Example& ex, const ChatTemplate& tmpl, const Tokenizer& tok,
                   const EncodeOptions* opts, int64_t max_length) {
  Sample s;
  if (ex.pretokenized()) {
    if (ex.input_ids.size() != ex.labels.size())
      throw std::runtime_error(ex.where + ": 'input_ids' and 'labels' differ in length");
    check_ids(ex.input_ids, "input_ids", false, ex, tok);
    check_ids(ex.labels, "labels", true, ex, tok);
    s.input_ids = ex.input_ids;
    s.labels = ex.labels;
  } else {
    bool has_assistant = false;
    for (const Message& m : ex.messages) has_assistant |= m.role == "assistant";
    if (!has_assistant)
      throw std::runtime_error(ex.where + ": the conversation has no assistant turn, so nothing "
                               "would be trained");
    try {
      s = opts ? tmpl.render_for_training(ex.messages, tok, *opts) : tmpl.render(ex.messages, tok);
    } catch (const std::exception& e) {
      throw std::runtime_error(ex.where + ": " + e.what());
    }
  }
  // max_length <= 0 means no limit. Cutting keeps the start, so a long reply loses its end
  // rather than the question it answers.
  if (max_length > 0 && static_cast<int64_t>(s.input_ids.size()) > max_length) {
    s.input_ids.resize(max_length);
    s.labels.resize(max_length);
  }
  return s;
}

}  // namespace

Sample encode_example(const Example& ex, const ChatTemplate& tmpl, const Tokenizer& tok,
                      int64_t max_length) {
  return encode_impl(ex, tmpl, tok, nullptr, max_length);
}

Sample encode_example(const Example& ex, const ChatTemplate& tmpl, const Tokenizer& tok,
                      const EncodeOptions& opts) {
  return encode_impl(ex, tmpl, tok, &opts, tmpl.max_length(opts));
}

}  // namespace ftrun::data
