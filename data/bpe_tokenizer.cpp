// Byte-level BPE tokenizer (see bpe_tokenizer.h for the file forms it loads).
//
// How encode() works, and why it matches tiktoken and HF tokenizers:
//  1. Added tokens marked `special: false` are cut out of the text first (HF's added vocabulary);
//     special tokens only where encode_allowing() names them.
//  2. The pre-tokenizer regex cuts the rest into pieces (findall; text between matches, which
//     only invalid UTF-8 can produce, becomes pieces too, so no byte is ever lost).
//  3. A piece that is itself a token is emitted whole when the form says so (tiktoken always;
//     tokenizer.json with `ignore_merges`). Otherwise its bytes start as one token each and the
//     adjacent pair with the lowest merge priority is merged until no pair merges; ties go to
//     the leftmost pair. tiktoken's priority of a pair is the rank of the concatenated bytes;
//     HF's is the pair's index in `merges`. Both become one table, (left id, right id) ->
//     (priority, merged id), so a single merge loop serves every form.
// Pieces of up to kCacheMaxBytes bytes are cached, as tiktoken and HF do.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/bpe_tokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

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
constexpr const char* kConfigFile = "tokenizer_config.json";

constexpr uint32_t kNoMerge = std::numeric_limits<uint32_t>::max();
// Pieces longer than this are merged every time: they are rare (long runs of one class of
// characters) and would bloat the cache.
constexpr size_t kCacheMaxBytes = 256;
// Up to this many bytes the merge loop scans an array (cache-friendly, no allocation); longer
// pieces use a heap so that a run of thousands of letters stays O(n log n).
constexpr size_t kSmallPiece = 48;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("tokenizer: cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const fs::path& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw std::runtime_error("tokenizer: " + path.string() + ": invalid JSON: " + e.what());
  }
}

struct Fnv1a64 {
  uint64_t h = 1469598103934665603ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  }
  template <class T>
  void add_pod(const T& v) {
    add(&v, sizeof v);
  }
  // The length goes first so that ("ab","c") and ("a","bc") hash differently.
  void add_str(std::string_view s) {
    add_pod(static_cast<uint64_t>(s.size()));
    add(s.data(), s.size());
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

// ---- text helpers -----------------------------------------------------------------------------

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

// Decodes one UTF-8 code point at s[i]; returns its length, 0 when invalid.
size_t utf8_next(std::string_view s, size_t i, char32_t& cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  if (c < 0x80) {
    cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  static const char32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
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

// ---- pre-tokenizer ----------------------------------------------------------------------------

// The sources' regex engines (Rust regex for tiktoken, Oniguruma for HF) read \s as Unicode
// White_Space. PCRE2 with UCP reads it as \p{Z} + \h + \v, which adds U+180E (Mongolian vowel
// separator, no longer a space since Unicode 6.3); so \s and \S are spelled out. A \S inside a
// character class cannot be spelled as a list and is left to PCRE2 (no pattern here has one).
std::string spell_out_whitespace(const std::string& pattern) {
  static const std::string ws =
      R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's')
        out += in_class ? ws : "[" + ws + "]";
      else if (e == 'S' && !in_class)
        out += "[^" + ws + "]";
      else
        out += {'\\', e};
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// A compiled pre-tokenizer regex (PCRE2, UTF + UCP; JIT when the library has it). Invalid UTF-8
// in the subject is allowed (PCRE2_MATCH_INVALID_UTF): it matches nothing and ends up between
// matches.
class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    const std::string compiled = spell_out_whitespace(pattern);
    int err = 0;
    PCRE2_SIZE err_at = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_at, nullptr);
    if (!code_)
      throw std::runtime_error("tokenizer: pre-tokenizer regex does not compile (" +
                               pcre2_message(err) + " at offset " + std::to_string(err_at) +
                               "): " + pattern);
    uint32_t have_jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &have_jit);
    jit_ = have_jit && pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls emit(begin, end) for each piece of text, in order; the pieces tile the text.
  template <class Emit>
  void split(std::string_view text, Emit&& emit) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    if (!md) throw std::bad_alloc();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const size_t n = text.size();
    size_t pos = 0, pending = 0;  // search start; start of text not yet emitted
    while (pos < n) {
      int rc = jit_ ? pcre2_jit_match(code_, subject, n, pos, 0, md.get(), nullptr)
                    : pcre2_match(code_, subject, n, pos, 0, md.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // the interpreter keeps its backtracking on the heap
        rc = pcre2_match(code_, subject, n, pos, PCRE2_NO_JIT, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0)
        throw std::runtime_error("tokenizer: pre-tokenizer regex failed: " + pcre2_message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match (only user patterns allow one): step over one character
        char32_t cp;
        const size_t len = b < n ? utf8_next(text, b, cp) : 1;
        pos = b + (len ? len : 1);
        continue;
      }
      if (b > pending) emit(pending, b);
      emit(b, e);
      pending = pos = e;
    }
    if (pending < n) emit(pending, n);
  }

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// ---- merge table ------------------------------------------------------------------------------

// (left id, right id) -> (priority, merged id): open addressing, linear probing. This is the
// hot lookup of encode(); std::unordered_map costs about twice as much here.
class PairTable {
 public:
  struct Hit {
    uint32_t rank = kNoMerge;
    int32_t id = -1;
  };

  void reserve(size_t n) { rehash(capacity_for(n)); }

  // Later entries replace earlier ones, as HF's merge map does for a repeated pair.
  void set(int32_t left, int32_t right, uint32_t rank, int32_t id) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(capacity_for(size_ + 1));
    Slot& s = find_slot(key(left, right));
    if (s.key == kEmpty) ++size_;
    s = {key(left, right), rank, id};
  }

  Hit get(int32_t left, int32_t right) const {
    if (slots_.empty()) return {};
    const uint64_t k = key(left, right);
    for (size_t i = hash(k);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == k) return {s.rank, s.id};
      if (s.key == kEmpty) return {};
    }
  }

  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = kNoMerge;
    int32_t id = -1;
  };
  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  static size_t capacity_for(size_t n) {
    size_t c = 16;
    while (c < n * 2) c <<= 1;
    return c;
  }
  size_t hash(uint64_t k) const {
    return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  Slot& find_slot(uint64_t k) {
    for (size_t i = hash(k);; i = (i + 1) & mask_)
      if (slots_[i].key == k || slots_[i].key == kEmpty) return slots_[i];
  }
  void rehash(size_t cap) {
    if (cap <= slots_.size()) return;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    shift_ = 64;
    for (size_t c = cap; c > 1; c >>= 1) --shift_;
    for (const Slot& s : old)
      if (s.key != kEmpty) find_slot(s.key) = s;
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
  int shift_ = 64;
};

// ---- piece cache ------------------------------------------------------------------------------

// Merged pieces, shared by all threads that encode with one tokenizer. Sharded so that
// concurrent encoders rarely wait; a full shard is simply cleared.
class PieceCache {
 public:
  bool find(std::string_view piece, std::vector<int64_t>& out) const {
    Shard& s = shard(piece);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(std::string(piece));
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(std::string_view piece, const int32_t* ids, size_t n) const {
    Shard& s = shard(piece);
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.map.size() >= kMaxPerShard) s.map.clear();
    s.map.emplace(std::string(piece), std::vector<int32_t>(ids, ids + n));
  }

 private:
  static constexpr size_t kShards = 16, kMaxPerShard = 1 << 12;  // 65,536 pieces in all
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  Shard& shard(std::string_view piece) const {
    return shards_[std::hash<std::string_view>()(piece) % kShards];
  }
  mutable std::array<Shard, kShards> shards_;
};

// ---- the tokenizer ----------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  bool special = true;
};

// Everything a loader reads from the files, before the tables are built.
struct Spec {
  std::string dir, format, pattern, normalizer;
  bool whole_piece_first = false;  // tiktoken; tokenizer.json `ignore_merges`
  bool rank_merges = false;        // tiktoken: a pair merges when its concatenation is a token
  std::vector<std::pair<int64_t, std::string>> tokens;  // id, raw bytes
  std::vector<std::pair<int64_t, int64_t>> merges;      // HF merges as ids, in priority order
  std::map<int64_t, AddedToken> added;
  std::string bos, eos, pad;  // names from tokenizer_config.json, "" when unset
  std::string config_path;    // for error messages
};

class BpeImpl final : public BpeTokenizer {
 public:
  explicit BpeImpl(Spec spec)
      : dir_(spec.dir),
        format_(spec.format),
        pattern_(spec.pattern),
        normalizer_(spec.normalizer),
        regex_(spec.pattern) {
    whole_piece_first_ = spec.whole_piece_first;
    added_ = std::move(spec.added);
    build_vocabulary(spec);
    if (spec.rank_merges)
      build_rank_merges();
    else
      build_listed_merges(spec.merges);
    for (const auto& [id, tok] : added_) {
      by_name_.emplace(tok.content, id);  // the first id wins for a duplicated name
      if (!tok.special && !tok.content.empty()) in_text_.emplace_back(tok.content, id);
    }
    bos_id_ = resolve(spec.bos, "bos_token", spec.config_path);
    eos_id_ = resolve(spec.eos, "eos_token", spec.config_path);
    pad_id_ = resolve(spec.pad, "pad_token", spec.config_path);
    fingerprint_ = make_fingerprint(spec);
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    return encode_with(text, in_text_);
  }

  std::vector<int64_t> encode_allowing(const std::string& text,
                                       const std::vector<std::string>& allowed) const override {
    std::vector<std::pair<std::string, int64_t>> matchers = in_text_;
    for (const std::string& name : allowed)
      if (!name.empty()) matchers.emplace_back(name, special_id(name));
    return encode_with(text, matchers);
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
    // Bytes are joined first and never checked per token: a character split across tokens
    // comes out whole, and what the ids spell is returned byte for byte.
    std::string out;
    for (int64_t id : ids) {
      check_id(id);
      auto it = added_.find(id);
      if (it != added_.end()) {
        if (!(skip_special && it->second.special)) out += it->second.content;
      } else {
        out += tokens_[static_cast<size_t>(id)];
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  bool has_special(const std::string& token) const override { return by_name_.count(token) > 0; }
  int64_t special_id(const std::string& token) const override {
    auto it = by_name_.find(token);
    if (it == by_name_.end())
      throw std::runtime_error("tokenizer (" + dir_ + "): no special token '" + token + "'");
    return it->second;
  }
  bool is_special(int64_t id) const override {
    auto it = added_.find(id);
    return it != added_.end() && it->second.special;
  }
  std::string fingerprint() const override { return fingerprint_; }
  int64_t bos_id() const override { return bos_id_; }
  int64_t eos_id() const override { return eos_id_; }
  int64_t pad_id() const override {
    if (pad_id_ >= 0) return pad_id_;
    return eos_id_ >= 0 ? eos_id_ : 0;
  }

  const std::string& source_format() const override { return format_; }
  const std::string& pattern() const override { return pattern_; }
  const std::string& normalizer() const override { return normalizer_; }
  std::vector<std::string> pretokenize(const std::string& text) const override {
    std::vector<std::string> out;
    regex_.split(text, [&](size_t b, size_t e) { out.emplace_back(text.substr(b, e - b)); });
    return out;
  }
  std::string token_bytes(int64_t id) const override {
    check_id(id);
    auto it = added_.find(id);
    return it != added_.end() ? it->second.content : tokens_[static_cast<size_t>(id)];
  }

 private:
  void check_id(int64_t id) const {
    if (id < 0 || id >= vocab_size_)
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                               " is outside the vocabulary [0, " + std::to_string(vocab_size_) +
                               ")");
    if (!in_vocab_[static_cast<size_t>(id)] && !added_.count(id))
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                               " is not assigned to any token");
  }

  void build_vocabulary(const Spec& spec) {
    int64_t max_id = -1;
    for (const auto& [id, bytes] : spec.tokens) max_id = std::max(max_id, id);
    for (const auto& [id, tok] : added_) max_id = std::max(max_id, id);
    if (max_id >= std::numeric_limits<int32_t>::max())
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(max_id) +
                               " is too large");
    vocab_size_ = max_id + 1;
    tokens_.assign(static_cast<size_t>(vocab_size_), std::string());
    in_vocab_.assign(static_cast<size_t>(vocab_size_), 0);
    for (const auto& [id, bytes] : spec.tokens) {
      if (in_vocab_[static_cast<size_t>(id)])
        throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                                 " appears twice in the " + format_ + " vocabulary");
      tokens_[static_cast<size_t>(id)] = bytes;
      in_vocab_[static_cast<size_t>(id)] = 1;
    }
    // The views point into tokens_, which is not resized from here on. Special tokens stay out
    // of the BPE tables so that encode() can never produce one from text.
    by_bytes_.reserve(spec.tokens.size() * 2);
    for (size_t id = 0; id < tokens_.size(); ++id) {
      if (!in_vocab_[id] || is_special(static_cast<int64_t>(id))) continue;
      by_bytes_.emplace(std::string_view(tokens_[id]), static_cast<int32_t>(id));  // lowest id wins
    }
    byte_id_.fill(-1);
    for (int b = 0; b < 256; ++b) {
      const char c = static_cast<char>(b);
      auto it = by_bytes_.find(std::string_view(&c, 1));
      if (it != by_bytes_.end()) byte_id_[b] = it->second;
    }
  }

  // tiktoken: every split of a token into two tokens is a merge with the token's rank.
  void build_rank_merges() {
    pairs_.reserve(tokens_.size() * 3);
    for (size_t id = 0; id < tokens_.size(); ++id) {
      const std::string& t = tokens_[id];
      if (!in_vocab_[id] || t.size() < 2 || is_special(static_cast<int64_t>(id))) continue;
      const std::string_view v(t);
      for (size_t k = 1; k < v.size(); ++k) {
        auto l = by_bytes_.find(v.substr(0, k));
        if (l == by_bytes_.end()) continue;
        auto r = by_bytes_.find(v.substr(k));
        if (r == by_bytes_.end()) continue;
        pairs_.set(l->second, r->second, static_cast<uint32_t>(id), static_cast<int32_t>(id));
      }
    }
  }

  void build_listed_merges(const std::vector<std::pair<int64_t, int64_t>>& merges) {
    pairs_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const auto [l, r] = merges[rank];
      const std::string joined = tokens_[static_cast<size_t>(l)] + tokens_[static_cast<size_t>(r)];
      auto it = by_bytes_.find(joined);
      if (it == by_bytes_.end()) {
        // A merge into a special token (kept out of by_bytes_) is dropped; anything else is a
        // broken file, which HF refuses too.
        bool special_result = false;
        for (const auto& [id, tok] : added_)
          if (tok.special && in_vocab_[static_cast<size_t>(id)] &&
              tokens_[static_cast<size_t>(id)] == joined)
            special_result = true;
        if (special_result) continue;
        throw std::runtime_error("tokenizer (" + dir_ + "): merge " + std::to_string(rank + 1) +
                                 " makes a token that is not in the vocabulary");
      }
      pairs_.set(static_cast<int32_t>(l), static_cast<int32_t>(r), static_cast<uint32_t>(rank),
                 it->second);
    }
  }

  int64_t resolve(const std::string& name, const char* key, const std::string& where) const {
    if (name.empty()) return -1;
    auto it = by_name_.find(name);
    if (it != by_name_.end()) return it->second;
    auto b = by_bytes_.find(name);
    if (b != by_bytes_.end()) return b->second;
    throw std::runtime_error("tokenizer: " + where + ": " + key + " '" + name +
                             "' is neither an added token nor a vocabulary token");
  }

  std::string make_fingerprint(const Spec& spec) const {
    Fnv1a64 h;
    h.add_str(format_);
    h.add_str(pattern_);
    h.add_pod(whole_piece_first_);
    h.add_pod(spec.rank_merges);
    for (size_t id = 0; id < tokens_.size(); ++id) {
      if (!in_vocab_[id]) continue;
      h.add_pod(static_cast<int64_t>(id));
      h.add_str(tokens_[id]);
    }
    for (const auto& [l, r] : spec.merges) {
      h.add_pod(l);
      h.add_pod(r);
    }
    for (const auto& [id, tok] : added_) {
      h.add_pod(id);
      h.add_str(tok.content);
      h.add_pod(tok.special);
    }
    for (int64_t id : {bos_id_, eos_id_, pad_id_}) h.add_pod(id);
    return h.hex();
  }

  // Cuts out the listed token strings (leftmost occurrence, the longest on ties) and encodes
  // the text between them.
  std::vector<int64_t> encode_with(
      const std::string& text, const std::vector<std::pair<std::string, int64_t>>& matchers) const {
    std::vector<int64_t> out;
    out.reserve(text.size() / 3 + 4);
    const std::string_view all(text);
    if (matchers.empty()) {
      encode_text(all, out);
      return out;
    }
    std::vector<size_t> next(matchers.size(), 0);  // next occurrence of each, at or after pos
    for (size_t k = 0; k < matchers.size(); ++k) next[k] = text.find(matchers[k].first);
    size_t pos = 0;
    for (;;) {
      size_t best = std::string::npos, best_k = 0;
      for (size_t k = 0; k < matchers.size(); ++k) {
        if (next[k] != std::string::npos && next[k] < pos)
          next[k] = text.find(matchers[k].first, pos);
        if (next[k] < best || (next[k] == best && best != std::string::npos &&
                               matchers[k].first.size() > matchers[best_k].first.size())) {
          best = next[k];
          best_k = k;
        }
      }
      if (best == std::string::npos) break;
      encode_text(all.substr(pos, best - pos), out);
      out.push_back(matchers[best_k].second);
      pos = best + matchers[best_k].first.size();
    }
    encode_text(all.substr(pos), out);
    return out;
  }

  void encode_text(std::string_view text, std::vector<int64_t>& out) const {
    if (text.empty()) return;
    std::vector<int32_t> scratch;
    regex_.split(text,
                 [&](size_t b, size_t e) { encode_piece(text.substr(b, e - b), out, scratch); });
  }

  int32_t byte_token(unsigned char b) const {
    const int32_t id = byte_id_[b];
    if (id < 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      throw std::runtime_error("tokenizer (" + dir_ + "): the vocabulary has no token for byte " +
                               hex + ", so this text cannot be encoded");
    }
    return id;
  }

  void encode_piece(std::string_view piece, std::vector<int64_t>& out,
                    std::vector<int32_t>& scratch) const {
    if (piece.size() == 1) {
      out.push_back(byte_token(static_cast<unsigned char>(piece[0])));
      return;
    }
    if (whole_piece_first_) {
      auto it = by_bytes_.find(piece);
      if (it != by_bytes_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = piece.size() <= kCacheMaxBytes;
    if (cacheable && cache_.find(piece, out)) return;
    scratch.clear();
    if (piece.size() <= kSmallPiece)
      merge_small(piece, scratch);
    else
      merge_heap(piece, scratch);
    out.insert(out.end(), scratch.begin(), scratch.end());
    if (cacheable) cache_.put(piece, scratch.data(), scratch.size());
  }

  // O(n^2) in the piece length, which is at most kSmallPiece here.
  void merge_small(std::string_view piece, std::vector<int32_t>& out) const {
    int32_t ids[kSmallPiece];
    PairTable::Hit pair[kSmallPiece];  // pair[i]: ids[i] with ids[i + 1]
    size_t n = piece.size();
    for (size_t i = 0; i < n; ++i) ids[i] = byte_token(static_cast<unsigned char>(piece[i]));
    for (size_t i = 0; i + 1 < n; ++i) pair[i] = pairs_.get(ids[i], ids[i + 1]);
    while (n > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < n; ++i)
        if (pair[i].rank < pair[best].rank) best = i;  // strict: the leftmost wins ties
      if (pair[best].rank == kNoMerge) break;
      ids[best] = pair[best].id;
      // Drop ids[best + 1] and pair[best + 1]; pair[best] is recomputed below.
      std::memmove(ids + best + 1, ids + best + 2, (n - best - 2) * sizeof ids[0]);
      if (best + 2 < n)
        std::memmove(pair + best + 1, pair + best + 2, (n - best - 3) * sizeof pair[0]);
      --n;
      pair[best] = best + 1 < n ? pairs_.get(ids[best], ids[best + 1]) : PairTable::Hit{};
      if (best > 0) pair[best - 1] = pairs_.get(ids[best - 1], ids[best]);
    }
    out.assign(ids, ids + n);
  }

  // Linked list of parts + min-heap of candidate merges keyed (priority << 32 | start byte),
  // so ties go to the leftmost. An entry does not say which pair it was for: on pop the pair
  // now starting there is looked up again and merged only if its priority is the entry's. If
  // the pair changed meanwhile but has the same priority, it has its own identical entry, so
  // merging now is what popping that one would do.
  void merge_heap(std::string_view piece, std::vector<int32_t>& out) const {
    const size_t n = piece.size();
    std::vector<int32_t> id(n), next(n), prev(n);
    for (size_t i = 0; i < n; ++i) {
      id[i] = byte_token(static_cast<unsigned char>(piece[i]));
      next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
      prev[i] = static_cast<int32_t>(i) - 1;
    }
    std::vector<uint64_t> heap;
    heap.reserve(n);
    auto push = [&](int32_t i) {
      const int32_t j = next[i];
      if (j < 0) return;
      const uint32_t rank = pairs_.get(id[i], id[j]).rank;
      if (rank == kNoMerge) return;
      heap.push_back(static_cast<uint64_t>(rank) << 32 | static_cast<uint32_t>(i));
      std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    };
    for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
      const uint64_t top = heap.back();
      heap.pop_back();
      const auto i = static_cast<int32_t>(top & 0xFFFFFFFFu);
      const int32_t j = next[i];
      if (id[i] < 0 || j < 0) continue;
      const PairTable::Hit hit = pairs_.get(id[i], id[j]);
      if (hit.rank != static_cast<uint32_t>(top >> 32)) continue;
      id[i] = hit.id;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      id[j] = -1;
      if (prev[i] >= 0) push(prev[i]);
      push(i);
    }
    out.clear();
    for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
  }

  std::string dir_, format_, pattern_, normalizer_;
  Regex regex_;
  bool whole_piece_first_ = false;
  int64_t vocab_size_ = 0;
  std::vector<std::string> tokens_;  // raw bytes by id
  std::vector<uint8_t> in_vocab_;
  std::unordered_map<std::string_view, int32_t> by_bytes_;  // BPE tokens only
  std::array<int32_t, 256> byte_id_{};
  PairTable pairs_;
  std::map<int64_t, AddedToken> added_;
  std::unordered_map<std::string, int64_t> by_name_;
  std::vector<std::pair<std::string, int64_t>> in_text_;  // non-special added tokens
  int64_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  std::string fingerprint_;
  PieceCache cache_;
};

// ---- loaders ----------------------------------------------------------------------------------

// HF writes bos_token etc. either as a string or as {"content": "...", ...}; null = unset.
std::string token_name(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return "";
}

// tokenizer_config.json: optional for BPE (Meta's original/ folder has none). Reads the added
// tokens, the bos/eos/pad names, and picks the regex for forms that do not carry one.
struct ConfigInfo {
  bool present = false;
  std::string path, tokenizer_class, pat_str;
};

ConfigInfo read_config(const fs::path& dir, Spec& spec) {
  ConfigInfo info;
  const fs::path path = dir / kConfigFile;
  info.path = path.string();
  spec.config_path = info.path;
  if (!fs::exists(path)) return info;
  info.present = true;
  const json cfg = read_json(path);
  if (!cfg.is_object())
    throw std::runtime_error("tokenizer: " + info.path + " must hold a JSON object");
  if (auto it = cfg.find("added_tokens_decoder"); it != cfg.end()) {
    if (!it->is_object())
      throw std::runtime_error("tokenizer: " + info.path +
                               ": 'added_tokens_decoder' must be an object");
    for (const auto& [key, val] : it->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0)
        throw std::runtime_error("tokenizer: " + info.path + ": added_tokens_decoder key '" + key +
                                 "' is not a token id");
      if (!val.is_object() || !val.contains("content") || !val["content"].is_string())
        throw std::runtime_error("tokenizer: " + info.path + ": added_tokens_decoder[\"" + key +
                                 "\"].content must be a string");
      if (spec.added.count(id)) continue;  // tokenizer.json's own list came first
      AddedToken tok;
      tok.content = val["content"].get<std::string>();
      if (val.contains("special") && val["special"].is_boolean())
        tok.special = val["special"].get<bool>();
      spec.added[id] = std::move(tok);
    }
  }
  spec.bos = token_name(cfg, "bos_token");
  spec.eos = token_name(cfg, "eos_token");
  spec.pad = token_name(cfg, "pad_token");
  if (auto it = cfg.find("tokenizer_class"); it != cfg.end() && it->is_string())
    info.tokenizer_class = it->get<std::string>();
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

Spec load_tiktoken(const fs::path& dir) {
  Spec spec;
  spec.dir = dir.string();
  spec.format = "tiktoken";
  spec.whole_piece_first = true;
  spec.rank_merges = true;
  const fs::path path = dir / kTiktokenFile;
  const std::string text = read_file(path);
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
                                                    Spec& spec) {
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
               const std::string& b, const std::string& where, size_t index, Spec& spec) {
  auto l = ids.find(a), r = ids.find(b);
  if (l == ids.end() || r == ids.end())
    throw std::runtime_error("tokenizer: " + where + ": merge " + std::to_string(index + 1) +
                             " ('" + a + " " + b + "') uses a token that is not in the vocabulary");
  spec.merges.emplace_back(l->second, r->second);
}

// One merge, "a b" (the classic form; the space is the separator since the byte-level
// alphabet has no space) or ["a", "b"] (newer tokenizers).
void parse_merge(const json& m, const std::unordered_map<std::string, int64_t>& ids,
                 const std::string& where, size_t index, Spec& spec) {
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

Spec load_tokenizer_json(const fs::path& dir, const json& tj) {
  Spec spec;
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
      AddedToken tok;
      tok.content = a["content"].get<std::string>();
      tok.special = json_true(a, "special", false);
      spec.added[a["id"].get<int64_t>()] = std::move(tok);
    }
  }
  read_config(dir, spec);  // bos/eos/pad, and added tokens tokenizer.json does not list
  return spec;
}

Spec load_vocab_merges(const fs::path& dir) {
  Spec spec;
  spec.dir = dir.string();
  spec.format = "vocab.json+merges.txt";
  const fs::path vpath = dir / kVocabJson, mpath = dir / kMergesTxt;
  const auto ids = read_vocab(read_json(vpath), vpath.string(), spec);
  const std::string text = read_file(mpath);
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
bool detect(const fs::path& dir, Spec& spec) {
  if (!fs::is_directory(dir)) return false;
  if (fs::exists(dir / kTokenizerJson)) {
    const json tj = read_json(dir / kTokenizerJson);
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
  Spec spec;
  if (!detect(dir, spec))
    throw std::runtime_error("tokenizer: directory '" + dir +
                             "' holds no byte-level BPE tokenizer (tokenizer.json, vocab.json + "
                             "merges.txt, or a tiktoken tokenizer.model)");
  return std::make_unique<BpeImpl>(std::move(spec));
}

std::unique_ptr<Tokenizer> try_load_bpe_tokenizer(const std::string& dir) {
  Spec spec;
  if (!detect(dir, spec)) return nullptr;
  return std::make_unique<BpeImpl>(std::move(spec));
}

}  // namespace ftrun::data
