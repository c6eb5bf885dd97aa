// FNV-1a 64-bit hash behind Tokenizer::fingerprint(). The tokenized-data cache is keyed by
// these fingerprints, so the bytes fed in (and their order) are part of the cache format:
// changing them invalidates every cache on disk.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace ftrun::data {

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

}  // namespace ftrun::data
