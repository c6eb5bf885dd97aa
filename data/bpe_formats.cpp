// Byte-level BPE file forms (bpe_tokenizer.h lists them): each loader reads its files into a
// BpeSpec (bpe_engine.h), which the engine turns into a tokenizer. tokenizer_config.json's added
// tokens and bos/eos/pad names come from the shared reader (added_tokens.h); this file adds the
// BPE-only keys `pat_str` and the regex choice by `tokenizer_class`.
#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include "data/added_tokens.h"
#include "data/bpe_engine.h"
#include "data/bpe_tokenizer.h"

namespace ftrun::data {

const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kTiktokenFile = "tokenizer.model";
constexpr const char* kTokenizerJson = "tokenizer.json";
constexpr const char* kVocabJson = "vocab.json";
constexpr const char* kMergesTxt = "merges.txt";

bool base64_decode(std::string_view in, std::string& out) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i)
      t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < in.size() && in[i] != '='; ++i) {
    const int v = table[static_cast<unsigned char>(in[i])];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  for (; i < in.size(); ++i)
    if (in[i] != '=') return false;
  return !out.empty();
}


// GPT-2's bytes_to_unicode, the alphabet of tokenizer.json / vocab.json / merges.txt: printable
// Latin-1 bytes stand for themselves, the other 68 bytes for U+0100.. in byte order.
struct ByteLevelAlphabet {
  std::array<int16_t, 0x144> byte_of{};  // code point -> byte, -1 when not in the alphabet

  ByteLevelAlphabet() {
    byte_of.fill(-1);
    int next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_of[printable ? b : next++] = static_cast<int16_t>(b);
    }
  }
  static const ByteLevelAlphabet& get() {
    static const ByteLevelAlphabet a;
    return a;
  }
  // A vocabulary string to raw bytes. Like HF's ByteLevel decoder, a string with any character
  // outside the alphabet stands for its own UTF-8 bytes.
  std::string to_bytes(std::string_view s) const {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      char32_t cp = 0;
      const size_t n = utf8_next(s, i, cp);
      if (n == 0 || cp >= byte_of.size() || byte_of[cp] < 0) return std::string(s);
      out.push_back(static_cast<char>(byte_of[cp]));
      i += n;
    }
    return out;
  }
};

// ---- loaders ----------------------------------------------------------------------------------

// tokenizer_config.json: optional for BPE (Meta's original/ folder has none). Adds its added
// tokens to those tokenizer.json listed (which come first), takes the bos/eos/pad names, and
// returns what picks the regex for forms that do not carry one.
struct ConfigInfo {
  bool present = false;
  std::string path, tokenizer_class, pat_str;
};

ConfigInfo read_config(const fs::path& dir, BpeSpec& spec) {
  ConfigInfo info;
  const fs::path path = dir / kTokenizerConfigFile;
  info.path = path.string();
  spec.config_path = info.path;
  if (!fs::exists(path)) return info;
  info.present = true;
  const json cfg = read_tokenizer_json(path);
  TokenizerConfig parsed = parse_tokenizer_config(cfg, info.path);
  for (auto& [id, tok] : parsed.added)
    spec.added.emplace(id, std::move(tok));  // tokenizer.json's own list came first
  spec.names = std::move(parsed.names);
  info.tokenizer_class = std::move(parsed.tokenizer_class);
  if (auto it = cfg.find("pat_str"); it != cfg.end()) {
    if (!it->is_string() || it->get<std::string>().empty())
      throw std::runtime_error("tokenizer: " + info.path +
                               ": 'pat_str' must be a non-empty regex string");
    info.pat_str = it->get<std::string>();
  }
  return info;
}

// The regex for tiktoken files and vocab.json + merges.txt, which do not carry one: the
// config's `pat_str` (an ftrun key, named after tiktoken's parameter) when present; else by
// `tokenizer_class`: Qwen2* -> Qwen2, GPT2* -> GPT-2; else the form's default.
std::string choose_pattern(const ConfigInfo& cfg, const char* fallback) {
  if (!cfg.pat_str.empty()) return cfg.pat_str;
  if (cfg.tokenizer_class.rfind("Qwen2", 0) == 0) return kQwen2Pattern;
  if (cfg.tokenizer_class.rfind("GPT2", 0) == 0) return kGpt2Pattern;
  return fallback;
}

// True when the start of the file reads as `<base64> <rank>`; a sentencepiece model is a
// binary protobuf and never does.
bool looks_like_tiktoken(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string line;
  if (!std::getline(in, line)) return false;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const size_t sp = line.find(' ');
  if (sp == std::string::npos || sp == 0 || sp + 1 == line.size()) return false;
  for (size_t i = 0; i < sp; ++i) {
    const char c = line[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '='))
      return false;
  }
  for (size_t i = sp + 1; i < line.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(line[i]))) return false;
  return true;
}

BpeSpec load_tiktoken(const fs::path& dir) {
  BpeSpec spec;
  spec.dir = dir.string();
  spec.format = "tiktoken";
  spec.whole_piece_first = true;
  spec.rank_merges = true;
  const fs::path path = dir / kTiktokenFile;
  const std::string text = read_tokenizer_file(path);
  std::string bytes;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    int64_t rank = -1;
    if (sp != std::string_view::npos && sp + 1 < line.size() && sp + 11 >= line.size()) {
      rank = 0;
      for (char c : line.substr(sp + 1)) {
        if (c < '0' || c > '9') {
          rank = -1;
          break;
        }
        rank = rank * 10 + (c - '0');
      }
    }
    if (rank < 0 || !base64_decode(line.substr(0, sp), bytes))
      throw std::runtime_error("tokenizer: " + path.string() + ":" + std::to_string(line_no) +
                               ": expected '<base64 token> <rank>'");
    spec.tokens.emplace_back(rank, bytes);
  }
  if (spec.tokens.empty()) throw std::runtime_error("tokenizer: " + path.string() + " is empty");
  const ConfigInfo cfg = read_config(dir, spec);
  spec.pattern = choose_pattern(cfg, kLlama3Pattern);
  return spec;
}

// vocab.json {"token": id} in the byte-level alphabet -> spec.tokens; returns string -> id.
std::unordered_map<std::string, int64_t> read_vocab(const json& vocab, const std::string& where,
                                                    BpeSpec& spec) {
  if (!vocab.is_object())
    throw std::runtime_error("tokenizer: " + where + ": the vocabulary must be an object");
  const ByteLevelAlphabet& alpha = ByteLevelAlphabet::get();
  std::unordered_map<std::string, int64_t> ids;
  ids.reserve(vocab.size() * 2);
  for (const auto& [tok, val] : vocab.items()) {
    if (!val.is_number_integer() || val.get<int64_t>() < 0)
      throw std::runtime_error("tokenizer: " + where + ": the id of '" + tok +
                               "' must be a non-negative integer");
    const int64_t id = val.get<int64_t>();
    ids.emplace(tok, id);
    spec.tokens.emplace_back(id, alpha.to_bytes(tok));
  }
  return ids;
}

void add_merge(const std::unordered_map<std::string, int64_t>& ids, const std::string& a,
               const std::string& b, const std::string& where, size_t index, BpeSpec& spec) {
  auto l = ids.find(a), r = ids.find(b);
  if (l == ids.end() || r == ids.end())
    throw std::runtime_error("tokenizer: " + where + ": merge " + std::to_string(index + 1) +
                             " ('" + a + " " + b + "') uses a token that is not in the vocabulary");
  spec.merges.emplace_back(l->second, r->second);
}

// One merge, "a b" (the classic form; the space is the separator since the byte-level
// alphabet has no space) or ["a", "b"] (newer tokenizers).
void parse_merge(const json& m, const std::unordered_map<std::string, int64_t>& ids,
                 const std::string& where, size_t index, BpeSpec& spec) {
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() ||
        s.find(' ', sp + 1) != std::string::npos)
      throw std::runtime_error("tokenizer: " + where + ": merge " + std::to_string(index + 1) +
                               " ('" + s + "') is not two tokens separated by a space");
    add_merge(ids, s.substr(0, sp), s.substr(sp + 1), where, index, spec);
  } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    add_merge(ids, m[0].get<std::string>(), m[1].get<std::string>(), where, index, spec);
  } else {
    throw std::runtime_error("tokenizer: " + where + ": merge " + std::to_string(index + 1) +
                             " must be \"a b\" or [\"a\", \"b\"]");
  }
}

bool json_true(const json& obj, const char* key, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  return it->is_boolean() ? it->get<bool>() : fallback;
}

std::string json_type(const json& obj) {
  if (!obj.is_object()) return "";
  auto it = obj.find("type");
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

std::vector<json> flatten_sequence(const json& node, const char* list_key) {
  if (node.is_null()) return {};
  if (json_type(node) == "Sequence") {
    auto it = node.find(list_key);
    if (it == node.end() || !it->is_array()) return {};
    return std::vector<json>(it->begin(), it->end());
  }
  return {node};
}

// A tokenizer.json that is byte-level BPE (else it belongs to sentencepiece or is unsupported).
bool is_byte_level_bpe(const json& tj) {
  if (!tj.is_object() || json_type(tj.value("model", json())) != "BPE") return false;
  for (const json& p : flatten_sequence(tj.value("pre_tokenizer", json()), "pretokenizers"))
    if (json_type(p) == "ByteLevel") return true;
  for (const json& d : flatten_sequence(tj.value("decoder", json()), "decoders"))
    if (json_type(d) == "ByteLevel") return true;
  return false;
}

BpeSpec load_tokenizer_json(const fs::path& dir, const json& tj) {
  BpeSpec spec;
  spec.dir = dir.string();
  spec.format = "tokenizer.json";
  const std::string where = (dir / kTokenizerJson).string();
  auto unsupported = [&](const std::string& what) {
    return std::runtime_error("tokenizer: " + where + ": " + what + " is not supported");
  };

  // Normalizer: only NFC (Qwen2) is accepted, and recorded rather than applied.
  for (const json& n : flatten_sequence(tj.value("normalizer", json()), "normalizers")) {
    const std::string t = json_type(n);
    if (t != "NFC") throw unsupported("normalizer '" + t + "'");
    spec.normalizer = t;
  }

  // Pre-tokenizer: Split(regex, Isolated) followed by ByteLevel(use_regex: false), or a lone
  // ByteLevel(use_regex: true), which brings GPT-2's regex.
  std::string split_pattern;
  bool byte_level_regex = false;
  for (const json& p : flatten_sequence(tj.value("pre_tokenizer", json()), "pretokenizers")) {
    const std::string t = json_type(p);
    if (t == "Split") {
      if (!split_pattern.empty()) throw unsupported("more than one Split pre-tokenizer");
      const json pat = p.value("pattern", json());
      if (pat.contains("Regex") && pat["Regex"].is_string()) {
        split_pattern = pat["Regex"].get<std::string>();
      } else if (pat.contains("String") && pat["String"].is_string()) {
        split_pattern = "\\Q" + pat["String"].get<std::string>() + "\\E";
      } else {
        throw unsupported("a Split pre-tokenizer without a pattern");
      }
      if (p.value("behavior", std::string()) != "Isolated")
        throw unsupported("Split behavior '" + p.value("behavior", std::string()) + "'");
      if (json_true(p, "invert", false)) throw unsupported("an inverted Split");
    } else if (t == "ByteLevel") {
      if (json_true(p, "add_prefix_space", false)) throw unsupported("ByteLevel add_prefix_space");
      byte_level_regex = json_true(p, "use_regex", true);
    } else {
      throw unsupported("pre-tokenizer '" + t + "'");
    }
  }
  if (!split_pattern.empty() && byte_level_regex)
    throw unsupported("a Split followed by ByteLevel with use_regex");
  if (split_pattern.empty() && !byte_level_regex)
    throw unsupported("a byte-level BPE without a pre-tokenizer regex");
  spec.pattern = split_pattern.empty() ? kGpt2Pattern : split_pattern;

  const json& model = tj.at("model");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && it->is_string() && !it->get<std::string>().empty())
      throw unsupported(std::string("model.") + key);
  }
  spec.whole_piece_first = json_true(model, "ignore_merges", false);
  if (!model.contains("vocab"))
    throw std::runtime_error("tokenizer: " + where + ": model.vocab is missing");
  const auto ids = read_vocab(model["vocab"], where, spec);
  const json merges = model.value("merges", json::array());
  if (!merges.is_array())
    throw std::runtime_error("tokenizer: " + where + ": model.merges must be a list");
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) parse_merge(merges[i], ids, where, i, spec);

  if (auto it = tj.find("added_tokens"); it != tj.end() && it->is_array()) {
    for (const json& a : *it) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string())
        throw std::runtime_error("tokenizer: " + where +
                                 ": each added_tokens entry needs an id and a content");
      // A negative id would become a special-token id no embedding row has (fuzz find).
      if (a["id"].get<int64_t>() < 0)
        throw std::runtime_error("tokenizer: " + where + ": added_tokens id " +
                                 std::to_string(a["id"].get<int64_t>()) + " (\"" +
                                 a["content"].get<std::string>() +
                                 "\") must be a non-negative integer");
      AddedToken tok;
      tok.content = a["content"].get<std::string>();
      tok.special = json_true(a, "special", false);
      spec.added[a["id"].get<int64_t>()] = std::move(tok);
    }
  }
  read_config(dir, spec);  // bos/eos/pad, and added tokens tokenizer.json does not list
  return spec;
}

BpeSpec load_vocab_merges(const fs::path& dir) {
  BpeSpec spec;
  spec.dir = dir.string();
  spec.format = "vocab.json+merges.txt";
  const fs::path vpath = dir / kVocabJson, mpath = dir / kMergesTxt;
  const auto ids = read_vocab(read_tokenizer_json(vpath), vpath.string(), spec);
  const std::string text = read_tokenizer_file(mpath);
  size_t line_no = 0, index = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    parse_merge(json(line), ids, mpath.string() + ":" + std::to_string(line_no), index++, spec);
  }
  const ConfigInfo cfg = read_config(dir, spec);
  spec.pattern = choose_pattern(cfg, kQwen2Pattern);
  // The slow Qwen2 tokenizer NFC-normalises its input (recorded, not applied: see header).
  if (cfg.tokenizer_class.rfind("Qwen2", 0) == 0) spec.normalizer = "NFC";
  return spec;
}

// Returns the spec of the BPE tokenizer in dir, or false when there is none.
bool detect(const fs::path& dir, BpeSpec& spec) {
  if (!fs::is_directory(dir)) return false;
  if (fs::exists(dir / kTokenizerJson)) {
    const json tj = read_tokenizer_json(dir / kTokenizerJson);
    if (is_byte_level_bpe(tj)) {
      spec = load_tokenizer_json(dir, tj);
      return true;
    }
    if (!fs::exists(dir / kTiktokenFile) && !fs::exists(dir / kVocabJson))
      throw std::runtime_error("tokenizer: " + (dir / kTokenizerJson).string() +
                               " is not a byte-level BPE tokenizer and the directory has no "
                               "sentencepiece tokenizer.model; this tokenizer is not supported");
  }
  if (fs::exists(dir / kVocabJson) && fs::exists(dir / kMergesTxt)) {
    spec = load_vocab_merges(dir);
    return true;
  }
  if (fs::exists(dir / kTiktokenFile) && looks_like_tiktoken(dir / kTiktokenFile)) {
    spec = load_tiktoken(dir);
    return true;
  }
  return false;
}

}  // namespace

std::unique_ptr<BpeTokenizer> BpeTokenizer::load(const std::string& dir) {
  BpeSpec spec;
  if (!detect(dir, spec))
    throw std::runtime_error("tokenizer: directory '" + dir +
                             "' holds no byte-level BPE tokenizer (tokenizer.json, vocab.json + "
                             "merges.txt, or a tiktoken tokenizer.model)");
  return make_bpe_tokenizer(std::move(spec));
}

std::unique_ptr<Tokenizer> try_load_bpe_tokenizer(const std::string& dir) {
  BpeSpec spec;
  if (!detect(dir, spec)) return nullptr;
  return make_bpe_tokenizer(std::move(spec));
}

}  // namespace ftrun::data
