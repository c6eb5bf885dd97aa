// The byte-level BPE engine, apart from the file forms: a loader (bpe_formats.cpp) fills a
// BpeSpec from whatever files it reads, and make_bpe_tokenizer() builds the tables and serves
// encode()/decode() the same way for every form. Internal to data/: callers use
// bpe_tokenizer.h or tokenizer.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/added_tokens.h"
#include "data/bpe_tokenizer.h"

namespace ftrun::data {

// Everything a loader reads from the files, before the tables are built.
struct BpeSpec {
  std::string dir, format, pattern, normalizer;
  bool whole_piece_first = false;  // tiktoken; tokenizer.json `ignore_merges`
  bool rank_merges = false;        // tiktoken: a pair merges when its concatenation is a token
  std::vector<std::pair<int64_t, std::string>> tokens;  // id, raw bytes
  std::vector<std::pair<int64_t, int64_t>> merges;      // HF merges as ids, in priority order
  std::map<int64_t, AddedToken> added;
  SpecialNames names;       // from tokenizer_config.json, "" when unset
  std::string config_path;  // for error messages
};

// The tokenizer `spec` describes. Throws naming spec.dir when the tables are inconsistent (an id
// twice, a merge into a token that is not in the vocabulary, a bos/eos/pad name not found) or
// the regex does not compile.
std::unique_ptr<BpeTokenizer> make_bpe_tokenizer(BpeSpec spec);

// Decodes one UTF-8 code point at s[i]; returns its length, 0 when invalid.
size_t utf8_next(std::string_view s, size_t i, char32_t& cp);

}  // namespace ftrun::data
