// data/: owns text-to-tokens: tokenizers, chat templates (templates/), dataset readers, the
// token cache, the collator and prompt fitting. It knows models only through the family
// registry's default template.
//
// Tokenizer interface, load_tokenizer() and the sentencepiece trainer. Implementations:
// sentencepiece in sp_tokenizer.cpp, byte-level BPE in bpe_tokenizer.h; tokenizer_config.json's
// added tokens are read for both by added_tokens.h.
//
// A sentencepiece tokenizer directory holds `tokenizer.model` and `tokenizer_config.json` whose
// `added_tokens_decoder` ({"ID": {"content": "<|eot_id|>", "special": true}, ...}) lists special
// tokens appended after the sentencepiece vocabulary (ChatGLM3's layout). Special
// tokens are never matched inside text by encode(): chat templates insert them by id, so user
// text that happens to contain "<|eot_id|>" stays text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ftrun::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Plain text to ids: no BOS/EOS added, no special-token parsing.
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // Like encode(), but occurrences of the listed special tokens inside `text` become their ids
  // (tiktoken's allowed_special), for a prompt a caller holds as one string; other special-token
  // text stays text. The leftmost occurrence wins, the longest on ties. Throws for a name that
  // is not a special token.
  virtual std::vector<int64_t> encode_allowing(const std::string& text,
                                               const std::vector<std::string>& allowed) const;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const = 0;
  virtual int64_t vocab_size() const = 0;  // including the special tokens
  virtual bool has_special(const std::string& token) const = 0;
  virtual int64_t special_id(const std::string& token) const = 0;  // throws naming the token
  virtual bool is_special(int64_t id) const = 0;
  // Stable hash of the vocabulary and specials (keys the tokenized-data cache).
  virtual std::string fingerprint() const = 0;
  // Ids named by tokenizer_config.json's bos_token / eos_token; -1 when it names none.
  virtual int64_t bos_id() const { return -1; }
  virtual int64_t eos_id() const { return -1; }
  // pad_token's id; without one, eos (HF's usual `pad_token = eos_token`), else 0. Padded
  // positions carry attention_mask 0 and label -100, so the choice never reaches the loss.
  virtual int64_t pad_id() const { return eos_id() >= 0 ? eos_id() : 0; }
};

inline std::vector<int64_t> Tokenizer::encode_allowing(
    const std::string& text, const std::vector<std::string>& allowed) const {
  std::vector<std::pair<std::string, int64_t>> names;
  for (const std::string& a : allowed)
    if (!a.empty()) names.emplace_back(a, special_id(a));
  std::vector<int64_t> out;
  auto add_text = [&](size_t from, size_t to) {
    if (to <= from) return;
    const std::vector<int64_t> ids = encode(text.substr(from, to - from));
    out.insert(out.end(), ids.begin(), ids.end());
  };
  size_t pos = 0;
  for (;;) {
    size_t best = std::string::npos, best_len = 0;
    int64_t best_id = -1;
    for (const auto& [name, id] : names) {
      const size_t at = text.find(name, pos);
      if (at < best || (at == best && at != std::string::npos && name.size() > best_len)) {
        best = at;
        best_len = name.size();
        best_id = id;
      }
    }
    if (best == std::string::npos) break;
    add_text(pos, best);
    out.push_back(best_id);
    pos = best + best_len;
  }
  add_text(pos, text.size());
  return out;
}

// Loads the tokenizer of a model directory: byte-level BPE when it holds tokenizer.json,
// vocab.json + merges.txt or a tiktoken tokenizer.model (try_load_bpe_tokenizer), else
// sentencepiece. Errors name the directory and the missing file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

// Trains a sentencepiece model (BPE, byte fallback, deterministic: one thread, fixed seed)
// on text_file and writes dir/tokenizer.model + dir/tokenizer_config.json with `specials`
// appended after the learned vocabulary (ids sp_size, sp_size + 1, ... in the given order).
// The model is byte-exact: identity normalisation, whitespace kept, no dummy prefix, so
// decode(encode(s)) == s and encode(a) + encode(b) decodes to a + b. When `specials` holds
// Llama-3's names, the config also sets bos_token (<|begin_of_text|>), eos_token (<|eot_id|>,
// else <|end_of_text|>) and pad_token (<|end_of_text|>).
void train_tokenizer(const std::string& text_file, const std::string& dir, int vocab_size,
                     const std::vector<std::string>& specials);

}  // namespace ftrun::data
