// Byte-level BPE tokenizers (Llama-3, GLM-4, Qwen2, cl100k-style) loaded from any of the three
// on-disk forms (shared/reference/formats.md section 4). bpe_formats.cpp reads the forms,
// bpe_engine.{h,cpp} is the merge engine they share, added_tokens.h the tokenizer_config.json
// reader shared with sentencepiece.
//   tokenizer.model   tiktoken text: `<base64 token bytes> <rank>` per line, rank = id = merge
//                     priority; special tokens from tokenizer_config.json `added_tokens_decoder`
//   tokenizer.json    HF tokenizers: model BPE (vocab + merges in GPT-2 bytes_to_unicode form),
//                     pre_tokenizer Split(regex, Isolated) + ByteLevel, added_tokens, ignore_merges
//   vocab.json + merges.txt   the HF "slow" form (Qwen2), specials from tokenizer_config.json
// tokenizer_config.json is optional for these forms (Meta's original/ folder has none); when
// present it gives the added tokens, bos/eos/pad_token and, for the two forms that carry no
// regex, the pre-tokenizer: its `pat_str` (an ftrun key named after tiktoken's parameter: the
// regex itself) wins; else `tokenizer_class` Qwen2* -> kQwen2Pattern, GPT2* -> kGpt2Pattern;
// else kLlama3Pattern for tiktoken files (Llama-3, GLM-4's ChatGLM4Tokenizer) and kQwen2Pattern
// for vocab.json + merges.txt. tokenizer.json always uses its own Split regex.
//
// Behaviour, and where it departs from the reference implementations:
// - Special tokens are never matched inside text by encode() (chat templates insert them by
//   id); encode_allowing() names the ones to recognise. Added tokens marked `special: false`
//   (e.g. Qwen2.5's <tool_call>) are matched inside text, as HF does; their lstrip/rstrip/
//   single_word flags are ignored.
// - \s in a pattern means Unicode White_Space, as in Rust regex (tiktoken) and Oniguruma (HF);
//   PCRE2 alone would also count U+180E.
// - Invalid UTF-8 is accepted: each run of invalid bytes becomes its own piece, so decode()
//   gives the input back byte for byte. decode() returns raw bytes and never substitutes U+FFFD.
// - Not done: the NFC normalizer of Qwen2 (text that is already NFC, nearly all text, is
//   unaffected); Meta's cutting of input into 400,000-character chunks and of runs over 25,000
//   (non-)whitespace characters (only such extreme runs can differ, and HF does not cut either).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace ftrun::data {

// Pre-tokenizer regexes, written as their sources write them (formats.md 4.2).
extern const char* const kLlama3Pattern;  // Llama-3, GLM-4, cl100k_base: \p{N}{1,3}
extern const char* const kQwen2Pattern;   // Qwen2: single digits, \p{N}
extern const char* const kGpt2Pattern;    // GPT-2 (ByteLevel use_regex: true; GPT2Tokenizer)

class BpeTokenizer : public Tokenizer {
 public:
  // Loads the byte-level BPE tokenizer of a model directory; throws naming the directory when
  // it holds none (use try_load_bpe_tokenizer to probe).
  static std::unique_ptr<BpeTokenizer> load(const std::string& dir);

  // Which form was loaded: "tiktoken", "tokenizer.json" or "vocab.json+merges.txt".
  virtual const std::string& source_format() const = 0;
  // The regex as configured (before ftrun's \s rewrite, see bpe_engine.cpp).
  virtual const std::string& pattern() const = 0;
  // The pieces the pre-tokenizer cuts `text` into (no added-token handling).
  virtual std::vector<std::string> pretokenize(const std::string& text) const = 0;
  // Raw bytes of a vocabulary token or the content of an added token; throws for unused ids.
  virtual std::string token_bytes(int64_t id) const = 0;
  // The HF normalizer type the files ask for ("" = none). ftrun does not apply it: NFC is
  // the only one accepted (Qwen2), and text that is already NFC is unaffected.
  virtual const std::string& normalizer() const = 0;
};

// The BPE tokenizer of `dir`, or nullptr when the directory holds no byte-level BPE files (then
// it is a sentencepiece directory). Detection, first hit wins:
//   1. tokenizer.json with a BPE model and a ByteLevel pre-tokenizer or decoder (a non-byte-level
//      tokenizer.json beside a tokenizer.model, as Llama-2's, means sentencepiece);
//   2. vocab.json + merges.txt;
//   3. tokenizer.model whose content is tiktoken text (sentencepiece's is binary protobuf).
std::unique_ptr<Tokenizer> try_load_bpe_tokenizer(const std::string& dir);

}  // namespace ftrun::data
