// The one reader of tokenizer_config.json's token entries, and the added-token table behind
// Tokenizer's special-token accessors. Both file-backed tokenizers use it: sentencepiece
// (sp_tokenizer.cpp) and byte-level BPE (bpe_formats.cpp reads, bpe_engine.cpp serves).
//
// tokenizer_config.json keys read here (HF's layout):
//   added_tokens_decoder   {"ID": {"content": "<|eot_id|>", "special": true, ...}, ...}: tokens
//                          added to the model's vocabulary; `special` defaults to true, the
//                          lstrip/rstrip/normalized/single_word flags are ignored
//   bos_token, eos_token, pad_token   a name, or {"content": name, ...}; null means unset
//   tokenizer_class        kept for the BPE loader, which picks a regex by it
// Special tokens are never matched inside text by encode(): chat templates insert them by id.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/fingerprint.h"
#include "data/tokenizer.h"

namespace ftrun::data {

constexpr const char* kTokenizerConfigFile = "tokenizer_config.json";

struct AddedToken {
  std::string content;
  bool special = true;
};

// tokenizer_config.json's bos_token / eos_token / pad_token; "" when unset.
struct SpecialNames {
  std::string bos, eos, pad;
};

// What parse_tokenizer_config() read.
struct TokenizerConfig {
  std::string path;  // names the file in errors
  // added_tokens_decoder in the parsed object's key order (nlohmann::json sorts keys as strings).
  std::vector<std::pair<int64_t, AddedToken>> added;
  SpecialNames names;
  std::string tokenizer_class;  // "" when absent
};

// A tokenizer file's bytes / parsed JSON, through io/file.h. Errors start "tokenizer: " and name
// the file; a JSON syntax error reads "tokenizer: <path>: invalid JSON: <parser message>".
std::string read_tokenizer_file(const std::filesystem::path& path);
nlohmann::json read_tokenizer_json(const std::filesystem::path& path);

// The keys above from a parsed tokenizer_config.json. Throws naming `path` when the file is not
// an object, an added_tokens_decoder key is not a token id, or an entry has no string content.
TokenizerConfig parse_tokenizer_config(const nlohmann::json& cfg, const std::string& path);

// Added tokens by id and by name, and the bos/eos/pad ids.
class AddedTokens {
 public:
  // `owner` (the tokenizer directory) and `missing_note` (appended) word the error of id().
  AddedTokens(std::string owner, std::string missing_note);

  // A later add() of the same id replaces the token; for a name given to several ids, the first
  // id added keeps it.
  void add(int64_t id, AddedToken tok);
  const std::map<int64_t, AddedToken>& by_id() const { return by_id_; }
  const AddedToken* find(int64_t id) const;
  bool has(const std::string& name) const { return by_name_.count(name) > 0; }
  int64_t id(const std::string& name) const;  // throws naming the token
  bool is_special(int64_t id) const;

  // Sets bos/eos/pad from `names`: an added token of that name, else vocab_id(name) when it is
  // >= 0 (the base vocabulary, which `vocab_what` names in the error, e.g. "a vocabulary
  // token"); otherwise throws naming `where` and the key.
  void resolve(const SpecialNames& names, const std::string& where,
               const std::function<int64_t(const std::string&)>& vocab_id, const char* vocab_what);
  int64_t bos() const { return bos_; }
  int64_t eos() const { return eos_; }
  // pad_token's id; without one, eos (HF's usual `pad_token = eos_token`), else 0.
  int64_t pad() const { return pad_ >= 0 ? pad_ : (eos_ >= 0 ? eos_ : 0); }

  // Feeds the added tokens, then the bos/eos/pad ids, to a fingerprint.
  void hash(Fnv1a64& h) const;

 private:
  std::string owner_, missing_note_;
  std::map<int64_t, AddedToken> by_id_;
  std::unordered_map<std::string, int64_t> by_name_;
  int64_t bos_ = -1, eos_ = -1, pad_ = -1;
};

// Tokenizer's special-token accessors answered from an AddedTokens table, for Base = Tokenizer
// or a subinterface of it (BpeTokenizer).
template <class Base>
class WithAddedTokens : public Base {
 public:
  bool has_special(const std::string& token) const override { return added_.has(token); }
  int64_t special_id(const std::string& token) const override { return added_.id(token); }
  bool is_special(int64_t id) const override { return added_.is_special(id); }
  int64_t bos_id() const override { return added_.bos(); }
  int64_t eos_id() const override { return added_.eos(); }
  int64_t pad_id() const override { return added_.pad(); }

 protected:
  explicit WithAddedTokens(AddedTokens added) : added_(std::move(added)) {}
  AddedTokens added_;
};

}  // namespace ftrun::data
