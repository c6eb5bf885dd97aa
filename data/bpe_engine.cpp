// The byte-level BPE engine (see bpe_engine.h; the file forms are read by bpe_formats.cpp).
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
#include "data/bpe_engine.h"

#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

#include "data/fingerprint.h"

namespace ftrun::data {

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

namespace {

constexpr uint32_t kNoMerge = std::numeric_limits<uint32_t>::max();
// Pieces longer than this are merged every time: they are rare (long runs of one class of
// characters) and would bloat the cache.
constexpr size_t kCacheMaxBytes = 256;
// Up to this many bytes the merge loop scans an array (cache-friendly, no allocation); longer
// pieces use a heap so that a run of thousands of letters stays O(n log n).
constexpr size_t kSmallPiece = 48;

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

// The special-token accessors come from WithAddedTokens (added_tokens.h), shared with
// sentencepiece.
class BpeImpl final : public WithAddedTokens<BpeTokenizer> {
 public:
  explicit BpeImpl(BpeSpec spec)
      : WithAddedTokens(AddedTokens(spec.dir, "")),
        dir_(spec.dir),
        format_(spec.format),
        pattern_(spec.pattern),
        normalizer_(spec.normalizer),
        regex_(spec.pattern) {
    whole_piece_first_ = spec.whole_piece_first;
    for (auto& [id, tok] : spec.added) added_.add(id, std::move(tok));
    build_vocabulary(spec);
    if (spec.rank_merges)
      build_rank_merges();
    else
      build_listed_merges(spec.merges);
    for (const auto& [id, tok] : added_.by_id())
      if (!tok.special && !tok.content.empty()) in_text_.emplace_back(tok.content, id);
    // bos/eos/pad: an added token, else a BPE vocabulary token.
    added_.resolve(
        spec.names, spec.config_path,
        [this](const std::string& name) -> int64_t {
          auto b = by_bytes_.find(name);
          return b != by_bytes_.end() ? b->second : -1;
        },
        "a vocabulary token");
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
      if (const AddedToken* tok = added_.find(id)) {
        if (!(skip_special && tok->special)) out += tok->content;
      } else {
        out += tokens_[static_cast<size_t>(id)];
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::string fingerprint() const override { return fingerprint_; }

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
    const AddedToken* tok = added_.find(id);
    return tok ? tok->content : tokens_[static_cast<size_t>(id)];
  }

 private:
  void check_id(int64_t id) const {
    if (id < 0 || id >= vocab_size_)
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                               " is outside the vocabulary [0, " + std::to_string(vocab_size_) +
                               ")");
    if (!in_vocab_[static_cast<size_t>(id)] && !added_.find(id))
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(id) +
                               " is not assigned to any token");
  }

  void build_vocabulary(const BpeSpec& spec) {
    int64_t max_id = -1;
    for (const auto& [id, bytes] : spec.tokens) max_id = std::max(max_id, id);
    for (const auto& [id, tok] : added_.by_id()) max_id = std::max(max_id, id);
    if (max_id >= std::numeric_limits<int32_t>::max())
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(max_id) +
                               " is too large");
    // The tables below are indexed by id: a few tokens with a huge id would allocate
    // gigabytes (fuzz find). Real vocabularies are dense (ids 0..N-1, added tokens right
    // after), so the largest id may exceed the entry count only by a margin.
    const int64_t entries = int64_t(spec.tokens.size() + added_.by_id().size());
    const int64_t allowed = std::min<int64_t>(4 * entries + 65536, int64_t(1) << 24);
    if (max_id >= allowed)
      throw std::runtime_error("tokenizer (" + dir_ + "): token id " + std::to_string(max_id) +
                               " is far beyond the " + std::to_string(entries) +
                               " tokens listed (ids must be below " + std::to_string(allowed) +
                               "): the vocabulary is not a dense id range");
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
        for (const auto& [id, tok] : added_.by_id())
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

  std::string make_fingerprint(const BpeSpec& spec) const {
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
    added_.hash(h);
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
  std::vector<std::pair<std::string, int64_t>> in_text_;  // non-special added tokens
  std::string fingerprint_;
  PieceCache cache_;
};

}  // namespace

std::unique_ptr<BpeTokenizer> make_bpe_tokenizer(BpeSpec spec) {
  return std::make_unique<BpeImpl>(std::move(spec));
}

}  // namespace ftrun::data
