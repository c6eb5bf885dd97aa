// tokenizer_config.json's token entries and the added-token table (see added_tokens.h).
#include "data/added_tokens.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "io/file.h"

namespace ftrun::data {
namespace {

using json = nlohmann::json;

// HF writes bos_token etc. either as a string or as {"content": "...", ...}; null = unset.
std::string token_name(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return "";
}

}  // namespace

std::string read_tokenizer_file(const std::filesystem::path& path) {
  try {
    return io::read_text_file(path);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("tokenizer: ") + e.what());
  }
}

// Not io::read_json_file: the tokenizers' syntax errors have always said "invalid JSON" with the
// "tokenizer: " prefix, and tests and users match on that wording.
nlohmann::json read_tokenizer_json(const std::filesystem::path& path) {
  const std::string text = read_tokenizer_file(path);
  // Bounded as every JSON ftrun reads (issue 16): tokenizer_config.json is small by nature;
  // tokenizer.json is large by nature (a vocabulary and merges), so only its nesting is bounded.
  static constexpr io::ParseLimits kTokenizerJsonLimits{0, 0, 64};
  try {
    io::check_json_shape(text, path.string(),
                         path.filename() == "tokenizer_config.json" ? io::kSmallJsonLimits : kTokenizerJsonLimits);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("tokenizer: ") + e.what());
  }
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error("tokenizer: " + path.string() + ": invalid JSON: " + e.what());
  }
}

TokenizerConfig parse_tokenizer_config(const json& cfg, const std::string& path) {
  TokenizerConfig out;
  out.path = path;
  if (!cfg.is_object())
    throw std::runtime_error("tokenizer: " + path + " must hold a JSON object");
  if (auto it = cfg.find("added_tokens_decoder"); it != cfg.end()) {
    if (!it->is_object())
      throw std::runtime_error("tokenizer: " + path + ": 'added_tokens_decoder' must be an object");
    for (const auto& [key, val] : it->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0)
        throw std::runtime_error("tokenizer: " + path + ": added_tokens_decoder key '" + key +
                                 "' is not a token id");
      if (!val.is_object() || !val.contains("content") || !val["content"].is_string())
        throw std::runtime_error("tokenizer: " + path + ": added_tokens_decoder[\"" + key +
                                 "\"].content must be a string");
      AddedToken tok;
      tok.content = val["content"].get<std::string>();
      if (val.contains("special") && val["special"].is_boolean())
        tok.special = val["special"].get<bool>();
      out.added.emplace_back(id, std::move(tok));
    }
  }
  out.names.bos = token_name(cfg, "bos_token");
  out.names.eos = token_name(cfg, "eos_token");
  out.names.pad = token_name(cfg, "pad_token");
  if (auto it = cfg.find("tokenizer_class"); it != cfg.end() && it->is_string())
    out.tokenizer_class = it->get<std::string>();
  return out;
}

AddedTokens::AddedTokens(std::string owner, std::string missing_note)
    : owner_(std::move(owner)), missing_note_(std::move(missing_note)) {}

void AddedTokens::add(int64_t id, AddedToken tok) {
  by_name_.emplace(tok.content, id);  // the first id wins for a duplicated name
  by_id_[id] = std::move(tok);
}

const AddedToken* AddedTokens::find(int64_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

int64_t AddedTokens::id(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    throw std::runtime_error("tokenizer (" + owner_ + "): no special token '" + name + "'" +
                             missing_note_);
  return it->second;
}

bool AddedTokens::is_special(int64_t id) const {
  const AddedToken* tok = find(id);
  return tok && tok->special;
}

void AddedTokens::resolve(const SpecialNames& names, const std::string& where,
                          const std::function<int64_t(const std::string&)>& vocab_id,
                          const char* vocab_what) {
  auto lookup = [&](const std::string& name, const char* key) -> int64_t {
    if (name.empty()) return -1;
    auto it = by_name_.find(name);
    if (it != by_name_.end()) return it->second;
    if (const int64_t id = vocab_id(name); id >= 0) return id;
    throw std::runtime_error("tokenizer: " + where + ": " + key + " '" + name +
                             "' is neither an added token nor " + vocab_what);
  };
  bos_ = lookup(names.bos, "bos_token");
  eos_ = lookup(names.eos, "eos_token");
  pad_ = lookup(names.pad, "pad_token");
}

void AddedTokens::hash(Fnv1a64& h) const {
  for (const auto& [id, tok] : by_id_) {
    h.add_pod(id);
    h.add_str(tok.content);
    h.add_pod(tok.special);
  }
  for (int64_t id : {bos_, eos_, pad_}) h.add_pod(id);
}

}  // namespace ftrun::data
