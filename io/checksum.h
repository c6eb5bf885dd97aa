// io/checksum.h: XXH64, the content checksum of checkpoint files (runtime/checkpoint.h writes
// one per file into COMPLETE and verifies them on resume). A non-cryptographic hash is enough:
// it guards against damage and mix-ups (a file changed or swapped after the save), not against
// an attacker, and at several GB/s it costs little next to reading the file. Implemented from
// the xxHash specification (Cyan4973/xxHash, doc/xxhash_spec.md) rather than adding a
// dependency; tests/io/checksum_test.cpp holds it to the reference's published values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace ftrun::io {

// Streaming XXH64: update() any number of times, digest() at any point.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  uint64_t v_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  unsigned char buf_[32];
  size_t buffered_ = 0;
};

uint64_t xxh64(const void* data, size_t n, uint64_t seed = 0);

// XXH64 (seed 0) of a whole file, read in chunks; throws "<path>: cannot open: <reason>" /
// "<path>: read error: <reason>".
uint64_t xxh64_file(const std::filesystem::path& path);

// 16 lowercase hex digits, as xxhsum prints them.
std::string hex64(uint64_t v);

}  // namespace ftrun::io
