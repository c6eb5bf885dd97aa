// Reading the golden tokenizer files under tests/data/golden (gzip-compressed vocabularies)
// and writing them in other forms: shared by bpe_test and bench/tokenizer_bench. ftrun_testing
// links ZLIB::ZLIB for its users.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ftrun::testing {

// The whole decompressed content of a .gz file.
inline std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  const bool ok = n == 0;
  gzclose(f);
  if (!ok) throw std::runtime_error("cannot decompress " + path);
  return out;
}

// Standard base64 with padding (the tiktoken file's token column).
inline std::string base64(const std::string& bytes) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(a[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(a[(acc << (6 - bits)) & 63]);
  while (out.size() % 4) out.push_back('=');
  return out;
}

}  // namespace ftrun::testing
