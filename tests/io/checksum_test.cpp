// io/checksum.h: XXH64 gives the reference implementation's published values (short inputs,
// the 32-byte stripe path, a seed), streaming in any chunking equals one call, and a file's
// checksum is its bytes' (errors name the file).
#include "io/checksum.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "testing/errors.h"

using namespace ftrun;

TEST(Xxh64, MatchesTheReferenceValues) {
  auto h = [](const char* s, uint64_t seed = 0) { return io::xxh64(s, std::strlen(s), seed); };
  EXPECT_EQ(h(""), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(h("", 1), 0xD5AFBA1336A3BE4Bull);
  EXPECT_EQ(h("a"), 0xD24EC4F1A98C6E5Bull);
  EXPECT_EQ(h("as"), 0x1C330FB2D66BE179ull);
  EXPECT_EQ(h("asd"), 0x631C37CE72A97393ull);
  EXPECT_EQ(h("asdf"), 0x415872F599CEA71Eull);
  EXPECT_EQ(h("abc"), 0x44BC2CF5AD770999ull);
  EXPECT_EQ(h("Call me Ishmael."), 0x6D04390FC9D61A90ull);
  // 39 and 46 bytes: the four-lane stripes, then 8-, 4- and 1-byte tails.
  EXPECT_EQ(h("Nobody inspects the spammish repetition"), 0xFBCEA83C8A378BF1ull);
  EXPECT_EQ(h("Some years ago--never mind how long precisely-"), 0x8F26F2B986AFDC52ull);
  EXPECT_EQ(io::hex64(0xFBCEA83C8A378BF1ull), "fbcea83c8a378bf1");
  EXPECT_EQ(io::hex64(1), "0000000000000001");
}

TEST(Xxh64, StreamingEqualsOneCall) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(char(i * 7 + 3));
  const uint64_t whole = io::xxh64(data.data(), data.size());
  for (size_t chunk : {1u, 3u, 8u, 31u, 32u, 33u, 100u, 999u}) {
    io::Xxh64 h;
    for (size_t at = 0; at < data.size(); at += chunk) h.update(data.data() + at, std::min(chunk, data.size() - at));
    EXPECT_EQ(h.digest(), whole) << chunk;
  }
}

TEST(Xxh64, FileChecksumIsItsBytes) {
  ftrun::testing::ScratchDir dir;
  const auto p = dir.path / "f.bin";
  std::string data(3 << 20, 'x');  // more than one read chunk
  data[12345] = 'y';
  std::ofstream(p, std::ios::binary) << data;
  EXPECT_EQ(io::xxh64_file(p), io::xxh64(data.data(), data.size()));
  const auto msg = ftrun::testing::error_of([&] { io::xxh64_file(dir.path / "missing"); });
  EXPECT_NE(msg.find("missing: cannot open"), std::string::npos) << msg;
}
