// A test tokenizer with real models' special-token ids and a trivially reversible text code:
// every byte b of the text is one id, kByteBase + b. The real GLM-4 / ChatGLM3 / Qwen2 /
// BlueLM tokenizers are not available here; with this one the tests can state the exact ids a
// template must produce (specials at their real ids, text as bytes) without asking the code
// under test. Also counts encode() calls, so the cache tests can tell whether it was used.
#pragma once
#include <atomic>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "data/tokenizer.h"

namespace ftrun::data::testing {

constexpr int64_t kByteBase = 3;  // ids 0..2 stay free for unk / <s> / </s>

class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer(std::string tag, std::map<std::string, int64_t> specials, int64_t vocab_size,
                int64_t bos = -1, int64_t eos = -1)
      : tag_(std::move(tag)), specials_(std::move(specials)), vocab_(vocab_size), bos_(bos),
        eos_(eos) {
    for (const auto& [name, id] : specials_) names_[id] = name;
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    ++encode_calls;
    std::vector<int64_t> ids;
    for (unsigned char c : text) ids.push_back(kByteBase + c);
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const override {
    std::string out;
    for (int64_t id : ids) {
      if (auto it = names_.find(id); it != names_.end()) {
        if (!skip_special) out += it->second;
      } else if (id >= kByteBase && id < kByteBase + 256) {
        out += static_cast<char>(id - kByteBase);
      } else {
        out += "<?" + std::to_string(id) + ">";
      }
    }
    return out;
  }
  int64_t vocab_size() const override { return vocab_; }
  bool has_special(const std::string& t) const override { return specials_.count(t) > 0; }
  int64_t special_id(const std::string& t) const override {
    auto it = specials_.find(t);
    if (it == specials_.end()) throw std::runtime_error("test tokenizer has no special '" + t + "'");
    return it->second;
  }
  bool is_special(int64_t id) const override { return names_.count(id) > 0; }
  std::string fingerprint() const override { return "byte-tokenizer:" + tag_; }
  int64_t bos_id() const override { return bos_; }
  int64_t eos_id() const override { return eos_; }

  mutable std::atomic<int64_t> encode_calls{0};

 private:
  std::string tag_;
  std::map<std::string, int64_t> specials_;
  std::map<int64_t, std::string> names_;
  int64_t vocab_, bos_, eos_;
};

// Bytes of `text` as this tokenizer's ids: how the tests spell expected text pieces.
inline std::vector<int64_t> bytes(const std::string& text) {
  std::vector<int64_t> ids;
  for (unsigned char c : text) ids.push_back(kByteBase + c);
  return ids;
}

// glm-4-9b-chat's added tokens (glm4-demo.md 3.2): ids 151329..151342, eos <|endoftext|>.
inline const ByteTokenizer& glm4_tokenizer() {
  static const ByteTokenizer tok(
      "glm4",
      {{"<|endoftext|>", 151329}, {"[MASK]", 151330}, {"[gMASK]", 151331}, {"[sMASK]", 151332},
       {"<sop>", 151333}, {"<eop>", 151334}, {"<|system|>", 151335}, {"<|user|>", 151336},
       {"<|assistant|>", 151337}, {"<|observation|>", 151338}, {"<|begin_of_image|>", 151339},
       {"<|end_of_image|>", 151340}, {"<|begin_of_video|>", 151341}, {"<|end_of_video|>", 151342}},
      151343, -1, 151329);
  return tok;
}

// chatglm3-6b (formats.md 4.3): specials 64789..64797 after the sentencepiece vocabulary,
// eos </s> = 2.
inline const ByteTokenizer& chatglm3_tokenizer() {
  static const ByteTokenizer tok(
      "chatglm3",
      {{"<s>", 1}, {"</s>", 2}, {"[MASK]", 64789}, {"[gMASK]", 64790}, {"[sMASK]", 64791},
       {"sop", 64792}, {"eop", 64793}, {"<|system|>", 64794}, {"<|user|>", 64795},
       {"<|assistant|>", 64796}, {"<|observation|>", 64797}},
      64798, 1, 2);
  return tok;
}

// Qwen2 (formats.md 4.3): <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645.
inline const ByteTokenizer& qwen2_tokenizer() {
  static const ByteTokenizer tok(
      "qwen2", {{"<|endoftext|>", 151643}, {"<|im_start|>", 151644}, {"<|im_end|>", 151645}},
      151646, -1, 151645);
  return tok;
}

}  // namespace ftrun::data::testing
