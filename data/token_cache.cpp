// Tokenized-data cache (see token_cache.h): keyed SHA-256, checked binary file, atomic
// write by rename.
#include "data/token_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <stdexcept>

#include "data/dataset.h"
#include "io/file.h"

namespace ftrun::data {
namespace {

namespace fs = std::filesystem;

// SHA-256 (FIPS 180-4). Written out here rather than pulling in a crypto library for one
// hash; it keys and checks files, nothing secret.
class Sha256 {
 public:
  Sha256() { reset(); }
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += n;
    while (n > 0) {
      const size_t take = std::min(n, size_t(64) - fill_);
      std::memcpy(buf_.data() + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == 64) {
        block(buf_.data());
        fill_ = 0;
      }
    }
  }
  void update_str(const std::string& s) {
    const uint64_t n = s.size();  // length-prefixed, so ("ab","c") and ("a","bc") differ
    update(&n, sizeof n);
    update(s.data(), s.size());
  }
  std::array<uint8_t, 32> digest() {
    const uint64_t bits = total_ * 8;
    const uint8_t pad = 0x80, zero = 0;
    update(&pad, 1);
    while (fill_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (56 - 8 * i));
    update(len, 8);
    std::array<uint8_t, 32> out{};
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) out[4 * i + j] = uint8_t(h_[i] >> (24 - 8 * j));
    reset();
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void reset() {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::memcpy(h_, init, sizeof h_);
    fill_ = 0;
    total_ = 0;
  }
  void block(const uint8_t* b) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(b[4 * i]) << 24 | uint32_t(b[4 * i + 1]) << 16 |
             uint32_t(b[4 * i + 2]) << 8 | uint32_t(b[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6],
             h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 =
          h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 =
          (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a;
    h_[1] += bb;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
    h_[5] += f;
    h_[6] += g;
    h_[7] += h;
  }

  uint32_t h_[8];
  std::array<uint8_t, 64> buf_{};
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

std::string hex(const std::array<uint8_t, 32>& d) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) {
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

// Layout (little-endian, as every host ftrun builds for):
//   0 magic "FTRUNTOK" | 8 u32 version | 12 u32 zero | 16 key (64 hex chars)
//   80 u64 samples | 88 u64 payload bytes | 96 payload | sha256(bytes 0 .. end of payload)
// Payload per sample: u64 length n, n x i32 input_ids, n x i32 labels.
constexpr char kMagic[8] = {'F', 'T', 'R', 'U', 'N', 'T', 'O', 'K'};
constexpr size_t kKeyLen = 64;
constexpr size_t kHeader = 8 + 4 + 4 + kKeyLen + 8 + 8;
constexpr size_t kDigest = 32;

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <class T>
T get(const std::string& in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof v);
  return v;
}

void default_warn(const std::string& msg) { std::cerr << "warning: " << msg << std::endl; }

std::string cache_file_name(const std::string& data_file, const std::string& template_name,
                            const std::string& key) {
  return fs::path(data_file).stem().string() + "." + template_name + "." + key + ".tok";
}

}  // namespace

std::string default_cache_dir(const std::string& output_dir) {
  if (const char* env = std::getenv("FTRUN_CACHE_DIR"); env && *env) return env;
  return (fs::path(output_dir) / ".ftrun_cache").string();
}

std::string token_cache_key(const std::string& data_file, const Tokenizer& tok,
                            const std::string& template_name, const EncodeOptions& opts) {
  std::error_code ec;
  if (fs::is_directory(data_file, ec))
    throw std::runtime_error(data_file + ": is a directory, not a dataset file");
  std::ifstream in(data_file, std::ios::binary);
  if (!in)
    throw std::runtime_error(data_file + ": cannot open dataset file (" + std::strerror(errno) + ")");
  Sha256 h;
  const uint32_t version = kTokenCacheVersion;
  h.update(&version, sizeof version);
  std::vector<char> buf(1 << 20);
  uint64_t size = 0;
  Sha256 content;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<size_t>(in.gcount());
    content.update(buf.data(), n);
    size += n;
  }
  if (in.bad()) throw std::runtime_error(data_file + ": read error (" + std::strerror(errno) + ")");
  const auto file_digest = content.digest();
  h.update(&size, sizeof size);
  h.update(file_digest.data(), file_digest.size());
  h.update_str(tok.fingerprint());
  h.update_str(template_name);
  const uint8_t combine = opts.combine ? 1 : 0;
  h.update(&combine, 1);
  h.update(&opts.max_input_length, sizeof opts.max_input_length);
  h.update(&opts.max_output_length, sizeof opts.max_output_length);
  return hex(h.digest());
}

void write_token_cache(const std::string& path, const std::string& key,
                       const std::vector<Sample>& samples) {
  if (key.size() != kKeyLen) throw std::runtime_error("token cache: bad key '" + key + "'");
  std::string payload;
  for (const Sample& s : samples) {
    if (s.labels.size() != s.input_ids.size())
      throw std::runtime_error("token cache: a sample's input_ids and labels differ in length");
    put<uint64_t>(payload, s.input_ids.size());
    for (const auto* v : {&s.input_ids, &s.labels})
      for (int64_t x : *v) {
        if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
          throw std::runtime_error("token cache: id " + std::to_string(x) + " does not fit int32");
        put<int32_t>(payload, static_cast<int32_t>(x));
      }
  }
  std::string out(kMagic, sizeof kMagic);
  put<uint32_t>(out, kTokenCacheVersion);
  put<uint32_t>(out, 0);
  out += key;
  put<uint64_t>(out, samples.size());
  put<uint64_t>(out, payload.size());
  out += payload;
  Sha256 h;
  h.update(out.data(), out.size());
  const auto d = h.digest();
  out.append(reinterpret_cast<const char*>(d.data()), d.size());

  // Atomic (temp sibling, fsync, rename): a crash or a concurrent reader never sees half a
  // cache file, and ranks building the same cache never interleave.
  try {
    io::write_file_atomic(path, out);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("token cache: ") + e.what());
  }
}

bool read_token_cache(const std::string& path, const std::string& key,
                      std::vector<Sample>* samples, std::string* why) {
  auto reject = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return reject("missing");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < kHeader + kDigest)
    return reject("truncated (" + std::to_string(data.size()) + " bytes)");
  if (std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) return reject("not a token cache file");
  if (const auto v = get<uint32_t>(data, 8); v != kTokenCacheVersion)
    return reject("format version " + std::to_string(v) + ", expected " +
                  std::to_string(kTokenCacheVersion));
  if (data.compare(16, kKeyLen, key) != 0) return reject("holds another key");
  const auto count = get<uint64_t>(data, 16 + kKeyLen);
  const auto payload = get<uint64_t>(data, 16 + kKeyLen + 8);
  if (payload != data.size() - kHeader - kDigest)
    return reject("length mismatch (payload " + std::to_string(payload) + " bytes, file has " +
                  std::to_string(data.size() - kHeader - kDigest) + "): truncated?");
  Sha256 h;
  h.update(data.data(), kHeader + payload);
  const auto d = h.digest();
  if (std::memcmp(d.data(), data.data() + kHeader + payload, kDigest) != 0)
    return reject("checksum mismatch (corrupted)");

  std::vector<Sample> out;
  size_t at = kHeader;
  const size_t end = kHeader + payload;
  for (uint64_t i = 0; i < count; ++i) {
    if (end - at < 8) return reject("sample " + std::to_string(i) + " runs past the payload");
    const auto n = get<uint64_t>(data, at);
    at += 8;
    if (n > (end - at) / 8) return reject("sample " + std::to_string(i) + " runs past the payload");
    Sample s;
    s.input_ids.resize(n);
    s.labels.resize(n);
    for (auto* v : {&s.input_ids, &s.labels})
      for (uint64_t j = 0; j < n; ++j, at += 4) (*v)[j] = get<int32_t>(data, at);
    out.push_back(std::move(s));
  }
  if (at != end) return reject("payload has trailing bytes");
  *samples = std::move(out);
  return true;
}

std::vector<Sample> load_or_build(const std::string& data_file, const ChatTemplate& tmpl,
                                  const Tokenizer& tok, const EncodeOptions& opts,
                                  const std::string& cache_dir, TokenCacheInfo* info,
                                  const WarnFn& warn_fn) {
  const WarnFn warn = warn_fn ? warn_fn : WarnFn(default_warn);
  TokenCacheInfo local;
  TokenCacheInfo& st = info ? *info : local;
  st = TokenCacheInfo{};

  auto build = [&] {
    std::vector<Sample> out;
    for (const auto& ex : read_dataset(data_file))
      out.push_back(encode_example(ex, tmpl, tok, opts));
    return out;
  };
  if (cache_dir.empty()) return build();

  const std::string key = token_cache_key(data_file, tok, tmpl.name(), opts);
  const std::string path =
      (fs::path(cache_dir) / cache_file_name(data_file, tmpl.name(), key)).string();
  st.path = path;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    std::vector<Sample> cached;
    std::string why;
    if (read_token_cache(path, key, &cached, &why)) {
      st.hit = true;
      return cached;
    }
    warn("token cache " + path + " is unusable (" + why + "); rebuilding it from " + data_file);
    st.rebuilt = true;
  }
  std::vector<Sample> samples = build();
  try {
    fs::create_directories(cache_dir);
    write_token_cache(path, key, samples);
  } catch (const std::exception& e) {
    warn(std::string("could not write the token cache (training goes on without it): ") + e.what());
  }
  return samples;
}

}  // namespace ftrun::data
