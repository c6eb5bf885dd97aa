// Chat templates: render conversations into input_ids + labels for training, and the
// generation prompt + stop tokens for inference.
//
// Rendering works at the token level: special tokens are inserted by id and each text segment
// (role name, separator, content) is encoded on its own, then the ids are concatenated. This
// keeps user text that spells "<|eot_id|>" from ever becoming a control token, and makes the
// label mask exact (no re-alignment of offsets). The price is that segment boundaries are also
// token boundaries; with the tokenizers ftrun trains (no sentencepiece dummy prefix) the
// decoded text is still exactly the HF template's text. A foreign sentencepiece model with
// add_dummy_prefix=true puts a "▁" at the start of every segment, as ChatGLM3's own
// tokenizer does when it encodes its template piecewise.
#include "data/chat_template.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "data/glm_templates.h"

namespace ftrun::data {
namespace {

constexpr int64_t kIgnore = -100;

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

void append(Sample& s, const std::vector<int64_t>& ids, bool train) {
  s.input_ids.insert(s.input_ids.end(), ids.begin(), ids.end());
  s.labels.insert(s.labels.end(), ids.begin(), ids.end());
  if (!train) std::fill(s.labels.end() - static_cast<std::ptrdiff_t>(ids.size()), s.labels.end(), kIgnore);
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
  static std::vector<int64_t> header(const std::string& role, const Tokenizer& tok) {
    std::vector<int64_t> ids = {tok.special_id("<|start_header_id|>")};
    const auto r = tok.encode(role);
    ids.insert(ids.end(), r.begin(), r.end());
    ids.push_back(tok.special_id("<|end_header_id|>"));
    const auto sep = tok.encode("\n\n");
    ids.insert(ids.end(), sep.begin(), sep.end());
    return ids;
  }
};

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
  if (name == "llama3") return std::make_unique<Llama3Template>();
  if (auto t = make_glm_family_template(name)) return t;
  throw std::runtime_error("unknown chat template '" + name +
                           "' (known: llama3, glm4, chatglm3, qwen, bluelm)");
}

std::string template_for_model(const std::string& model_type, const Tokenizer& tok) {
  std::string t = model_type;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "llama") return "llama3";
  if (t == "qwen2") return "qwen";
  // ChatGLM3 and GLM-4 both say "chatglm"; their tokenizers differ in the start token's name.
  if (t == "chatglm") return tok.has_special("<sop>") ? "glm4" : "chatglm3";
  if (t == "glm" || t == "glm4") return "glm4";
  if (t == "bluelm") return "bluelm";
  return model_type;
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
