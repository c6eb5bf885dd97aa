// Tests for models/safetensors: bit-exact round trips, the reference writer's layout, files
// built byte by byte (independent of our writer), every header rule a reader enforces, and
// sharded model directories with their index.
#include "models/safetensors.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;
using nlohmann::json;
namespace st = ftrun::st;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from a header text and a data buffer, exactly as given.
std::string raw_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string bytes_of(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

template <typename T>
std::string pod_bytes(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  return s;
}

void write_text(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << p;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t header_len(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  return n;
}

// Runs f, which must throw a std::runtime_error whose message starts with `path: ` and
// contains `phrase`.
template <typename F>
void expect_error(F&& f, const std::string& path, const std::string& phrase) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing \"" << phrase << "\"";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos)
        << "message lacks \"" << phrase << "\": " << msg;
  }
}

void expect_bit_equal(const at::Tensor& want, const at::Tensor& got, const std::string& name) {
  ASSERT_TRUE(got.defined()) << name;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
  EXPECT_EQ(got.sizes(), want.sizes()) << name;
  EXPECT_TRUE(got.is_contiguous()) << name;
  EXPECT_EQ(bytes_of(got), bytes_of(want)) << name;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ftrun_safetensors_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a hand-made file and expects File::open to reject it with `phrase`.
  void expect_rejected(const std::string& bytes, const std::string& phrase,
                       const std::string& name = "bad.safetensors") {
    const std::string p = file(name);
    write_text(p, bytes);
    expect_error([&] { st::File::open(p); }, p, phrase);
  }

  fs::path dir_;
};

const std::string kF32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":)";

// ---------------------------------------------------------------------------------------------
// Round trips

st::NamedTensors sample_tensors() {
  torch::manual_seed(7);
  at::Tensor f32 = torch::randn({3, 5});
  // Specials must survive bit for bit: NaN payload, signed zero, infinities, a denormal.
  uint32_t nan_payload = 0x7fc12345u;
  float nan_f;
  std::memcpy(&nan_f, &nan_payload, 4);
  f32[0][0] = nan_f;
  f32[0][1] = -0.0f;
  f32[0][2] = std::numeric_limits<float>::infinity();
  f32[0][3] = -std::numeric_limits<float>::infinity();
  f32[0][4] = std::numeric_limits<float>::denorm_min();
  at::Tensor i64 = torch::tensor({std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0},
                                  std::numeric_limits<int64_t>::max()},
                                 torch::kLong)
                       .reshape({2, 2});
  return {
      {"f32", f32},
      {"f16", torch::randn({4, 3}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 3, 4}).to(torch::kBFloat16)},
      {"i64", i64},
      {"bool", torch::tensor({true, false, false, true, true})},
      {"scalar_f32", torch::tensor(3.25f)},
      {"scalar_i64", torch::tensor(int64_t{-42})},
      {"empty_f32", torch::empty({0, 3})},
      {"empty_bf16", torch::empty({5, 0}, torch::kBFloat16)},
      {"empty_1d", torch::empty({0}, torch::kBool)},
      {"f64", torch::randn({3}, torch::kDouble)},
      {"i32", torch::randint(-1000, 1000, {7}, torch::kInt)},
      {"i16", torch::randint(-1000, 1000, {3}, torch::kShort)},
      {"i8", torch::randint(-128, 127, {5}, torch::kChar)},
      {"u8", torch::randint(0, 255, {9}, torch::kByte)},
  };
}

TEST_F(SafetensorsTest, RoundTripIsBitExact) {
  const auto tensors = sample_tensors();
  const std::string p = file("rt.safetensors");
  st::save(p, tensors);

  auto f = st::File::open(p);
  EXPECT_EQ(f->path(), p);
  EXPECT_EQ(f->tensors().size(), tensors.size());
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f->contains(name)) << name;
    expect_bit_equal(t, f->get(name), name);
  }
  EXPECT_FALSE(f->contains("absent"));

  const auto all = st::load_all(p);
  ASSERT_EQ(all.size(), tensors.size());
  for (const auto& [name, t] : tensors) expect_bit_equal(t, all.at(name), name);
}

TEST_F(SafetensorsTest, TensorsOwnTheirMemoryAfterTheFileIsClosed) {
  const std::string p = file("own.safetensors");
  at::Tensor t = torch::arange(12, torch::kFloat).reshape({3, 4});
  st::save(p, {{"t", t}});
  at::Tensor got;
  {
    auto f = st::File::open(p);
    got = f->get("t");
  }
  fs::remove(p);  // the mapping is gone; the tensor must not depend on it
  EXPECT_TRUE(torch::equal(got, t));
  got.add_(1);  // writable, not a read-only mapping
  EXPECT_EQ(got[0][0].item<float>(), 1.0f);
}

TEST_F(SafetensorsTest, NonContiguousInputIsWrittenInLogicalOrder) {
  const std::string p = file("nc.safetensors");
  at::Tensor base = torch::arange(24, torch::kFloat).reshape({4, 6});
  at::Tensor t = base.t();                      // transposed
  using torch::indexing::Slice;
  at::Tensor s = base.index({Slice(), Slice(1, 5, 2)});  // strided columns
  st::save(p, {{"t", t}, {"s", s}});
  auto f = st::File::open(p);
  EXPECT_TRUE(torch::equal(f->get("t"), t.contiguous()));
  EXPECT_TRUE(torch::equal(f->get("s"), s.contiguous()));
  EXPECT_EQ(f->get("t").sizes(), t.sizes());
}

TEST_F(SafetensorsTest, EmptyTensorListAndEmptyMetadata) {
  const std::string p = file("none.safetensors");
  st::save(p, {});
  auto f = st::File::open(p);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_TRUE(st::load_all(p).empty());

  const std::string q = file("nometa.safetensors");
  st::save(q, {{"x", torch::ones({2})}}, {});
  const std::string bytes = read_text(q);
  EXPECT_EQ(bytes.find("__metadata__"), std::string::npos);
  EXPECT_TRUE(st::File::open(q)->metadata().empty());
}

TEST_F(SafetensorsTest, SaveOverwritesAtomicallyAndLeavesNoTempFile) {
  const std::string p = file("ow.safetensors");
  st::save(p, {{"a", torch::zeros({100})}});
  st::save(p, {{"b", torch::ones({2})}});
  auto f = st::File::open(p);
  EXPECT_FALSE(f->contains("a"));
  EXPECT_TRUE(torch::equal(f->get("b"), torch::ones({2})));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"ow.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// Writer layout

TEST_F(SafetensorsTest, HeaderIsPaddedTo8AndMetadataComesFirst) {
  // Names of every length mod 8 exercise every amount of padding.
  for (int len = 1; len <= 9; ++len) {
    const std::string p = file("pad" + std::to_string(len) + ".safetensors");
    st::save(p, {{std::string(len, 'w'), torch::ones({3}, torch::kHalf)}});
    const std::string bytes = read_text(p);
    const uint64_t n = header_len(bytes);
    EXPECT_EQ((8 + n) % 8, 0u) << len;
    const std::string header = bytes.substr(8, n);
    EXPECT_EQ(header.rfind(R"({"__metadata__":{"format":"pt"},)", 0), 0u) << header;
    // Only spaces may follow the closing brace.
    const size_t close = header.find_last_of('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
    EXPECT_LT(header.size() - close - 1, 8u);
    EXPECT_EQ(bytes.size(), 8 + n + 6);
  }
}

TEST_F(SafetensorsTest, HeaderMatchesTheReferenceWriterByteForByte) {
  const std::string p = file("golden.safetensors");
  st::save(p, {{"b", torch::tensor({1.0f, 2.0f})}, {"a", torch::tensor({int64_t{7}})}});
  const std::string bytes = read_text(p);
  std::string want =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  want.append((8 - want.size() % 8) % 8, ' ');
  EXPECT_EQ(header_len(bytes), want.size());
  EXPECT_EQ(bytes.substr(8, want.size()), want);
  EXPECT_EQ(bytes.substr(8 + want.size()), pod_bytes<int64_t>({7}) + pod_bytes<float>({1, 2}));
}

TEST_F(SafetensorsTest, WriterOrdersByDecreasingAlignmentThenName) {
  const std::string p = file("order.safetensors");
  st::save(p, {
                  {"z_bool", torch::ones({3}, torch::kBool)},
                  {"a_f16", torch::ones({1}, torch::kHalf)},
                  {"b_bf16", torch::ones({1}, torch::kBFloat16)},
                  {"y_f32", torch::ones({1}, torch::kFloat)},
                  {"c_i64", torch::ones({1}, torch::kLong)},
                  {"a_f64", torch::ones({1}, torch::kDouble)},
                  {"b_i8", torch::ones({1}, torch::kChar)},
                  {"a_u8", torch::ones({1}, torch::kByte)},
                  {"m_f32", torch::ones({1}, torch::kFloat)},
                  {"k_i32", torch::ones({1}, torch::kInt)},
                  {"q_i16", torch::ones({1}, torch::kShort)},
              });
  // The reference sorts by its Dtype enum, descending: I64 F64 F32 I32 BF16 F16 I16 I8 U8 BOOL.
  const std::vector<std::string> want = {"c_i64", "a_f64", "m_f32", "y_f32", "k_i32", "b_bf16",
                                         "a_f16", "q_i16", "b_i8",  "a_u8",  "z_bool"};
  auto f = st::File::open(p);
  std::vector<std::string> got;
  uint64_t expect_begin = 0;
  for (const auto& info : f->tensors()) {
    got.push_back(info.name);
    EXPECT_EQ(info.begin, expect_begin) << info.name;
    expect_begin = info.end;
    // With decreasing itemsize and an 8-aligned start, every tensor is naturally aligned.
    const int64_t item = c10::elementSize(st::to_scalar_type(info.dtype));
    EXPECT_EQ(info.begin % item, 0u) << info.name;
  }
  EXPECT_EQ(got, want);

  // The header text lists them in the same order.
  const std::string bytes = read_text(p);
  const std::string header = bytes.substr(8, header_len(bytes));
  size_t last = 0;
  for (const auto& name : want) {
    const size_t at = header.find("\"" + name + "\"");
    ASSERT_NE(at, std::string::npos) << name;
    EXPECT_GT(at, last) << name;
    last = at;
  }
}

// ---------------------------------------------------------------------------------------------
// Files built by hand

TEST_F(SafetensorsTest, ReadsAHandBuiltFile) {
  // Metadata last, JSON order unlike data order, odd header length with trailing spaces, a
  // rank-0 scalar and a zero-size tensor sharing an offset with its neighbour.
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("h":{"dtype":"F16","shape":[3],"data_offsets":[24,30]},)"
      R"("s":{"dtype":"I64","shape":[],"data_offsets":[16,24]},)"
      R"("e":{"dtype":"BF16","shape":[0,4],"data_offsets":[24,24]},)"
      R"("b":{"dtype":"BOOL","shape":[2],"data_offsets":[30,32]},)"
      R"("__metadata__":{"k":"v","format":"pt"}}   )";
  const std::string data = pod_bytes<float>({1.5f, -2.0f, 3.0f, 0.25f}) +
                           pod_bytes<int64_t>({-5}) +
                           pod_bytes<uint16_t>({0x3C00, 0xC000, 0x7C00}) +
                           std::string("\x01\x00", 2);
  ASSERT_EQ(data.size(), 32u);
  const std::string p = file("hand.safetensors");
  write_text(p, raw_file(header, data));

  auto f = st::File::open(p);
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"k", "v"}, {"format", "pt"}}));
  std::vector<std::string> order;
  for (const auto& info : f->tensors()) order.push_back(info.name);
  EXPECT_EQ(order, (std::vector<std::string>{"w", "s", "e", "h", "b"}));
  const auto& w_info = f->tensors()[0];
  EXPECT_EQ(w_info.dtype, "F32");
  EXPECT_EQ(w_info.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(w_info.begin, 0u);
  EXPECT_EQ(w_info.end, 16u);

  at::Tensor w = f->get("w");
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_TRUE(torch::equal(w, torch::tensor({1.5f, -2.0f, 3.0f, 0.25f}).reshape({2, 2})));

  at::Tensor s = f->get("s");
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<int64_t>(), -5);

  at::Tensor e = f->get("e");
  EXPECT_EQ(e.scalar_type(), at::kBFloat16);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{0, 4}));

  at::Tensor h = f->get("h").to(torch::kFloat);
  EXPECT_EQ(h[0].item<float>(), 1.0f);
  EXPECT_EQ(h[1].item<float>(), -2.0f);
  EXPECT_TRUE(std::isinf(h[2].item<float>()));

  at::Tensor b = f->get("b");
  EXPECT_EQ(b.scalar_type(), at::kBool);
  EXPECT_TRUE(torch::equal(b, torch::tensor({true, false})));
}

TEST_F(SafetensorsTest, ReadsAFileWithNoTensorsAndNoMetadata) {
  const std::string p = file("empty_obj.safetensors");
  write_text(p, raw_file("{}", ""));
  auto f = st::File::open(p);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST_F(SafetensorsTest, KnownDtypeWithoutLibtorchEquivalentOpensButCannotBeRead) {
  const std::string p = file("f8.safetensors");
  write_text(p, raw_file(R"({"x":{"dtype":"F8_E8M0","shape":[4],"data_offsets":[0,4]},)"
                         R"("y":{"dtype":"U8","shape":[1],"data_offsets":[4,5]}})",
                         std::string("\x01\x02\x03\x04\x09", 5)));
  auto f = st::File::open(p);
  EXPECT_EQ(f->get("y").item<uint8_t>(), 9);
  expect_error([&] { f->get("x"); }, p, "tensor 'x'");
}

// ---------------------------------------------------------------------------------------------
// Rejections

TEST_F(SafetensorsTest, RejectsFileShorterThan8Bytes) {
  expect_rejected("", "0 bytes, shorter than the 8-byte header length", "empty.safetensors");
  expect_rejected(std::string("\x02\x00\x00\x00\x00", 5),
                  "5 bytes, shorter than the 8-byte header length");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthOverTheLimit) {
  expect_rejected(le64(100'000'001) + "{}", "header length 100000001 exceeds the limit");
  expect_rejected(le64(~uint64_t{0}) + "{}", "exceeds the limit");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastTheEndOfTheFile) {
  expect_rejected(le64(64) + "{}", "header length 64 but only 2 bytes follow");
}

TEST_F(SafetensorsTest, RejectsTruncatedData) {
  const std::string p = file("good.safetensors");
  st::save(p, {{"a", torch::ones({4})}, {"b", torch::ones({4}, torch::kLong)}});
  std::string bytes = read_text(p);
  bytes.resize(bytes.size() - 3);
  expect_rejected(bytes, "file truncated");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  const std::string p = file("good.safetensors");
  st::save(p, {{"a", torch::ones({4})}});
  expect_rejected(read_text(p) + "xyz", "not fully covered: 3 trailing bytes");
}

TEST_F(SafetensorsTest, RejectsBadJson) {
  expect_rejected(raw_file(R"({"a":{"dtype":"F32",)", ""), "header is not valid JSON");
  expect_rejected(raw_file(R"({"a":1} x)", ""), "header is not valid JSON");
  expect_rejected(raw_file("[1,2]   ", ""), "does not start with '{'");
  expect_rejected(raw_file("", ""), "does not start with '{'");
  expect_rejected(raw_file("{\"\xff\":1}", ""), "header is not valid JSON");  // not UTF-8
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  expect_rejected(raw_file(R"({"a":)" + kF32x2 + R"([0,8]},"a":)" + kF32x2 + "[8,16]}}",
                           std::string(16, '\0')),
                  "duplicate tensor name 'a'");
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
               std::string(8, '\0')),
      "duplicate key 'dtype' inside 'a'");
  expect_rejected(raw_file(R"({"__metadata__":{"k":"1","k":"2"}})", ""),
                  "duplicate key 'k' inside '__metadata__'");
}

TEST_F(SafetensorsTest, RejectsGapBetweenTensors) {
  expect_rejected(raw_file(R"({"a":)" + kF32x2 + R"([0,8]},"b":)" + kF32x2 + "[12,20]}}",
                           std::string(20, '\0')),
                  "gap in the data buffer: tensor 'b' data_offsets [12, 20] begins at 12 but "
                  "tensor 'a' ends at 8");
  expect_rejected(raw_file(R"({"a":)" + kF32x2 + "[4,12]}}", std::string(12, '\0')),
                  "the buffer starts at 0");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  expect_rejected(raw_file(R"({"a":)" + kF32x2 + R"([0,8]},"b":)" + kF32x2 + "[4,12]}}",
                           std::string(12, '\0')),
                  "tensor 'b' data_offsets [4, 12] overlap tensor 'a' data_offsets [0, 8]");
  // Identical ranges overlap too.
  expect_rejected(raw_file(R"({"a":)" + kF32x2 + R"([0,8]},"b":)" + kF32x2 + "[0,8]}}",
                           std::string(8, '\0')),
                  "overlap");
}

TEST_F(SafetensorsTest, RejectsWrongByteLengthForShape) {
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", std::string(12, 0)),
      "tensor 'a' data_offsets [0, 12] but shape [2,2] F32 needs 16 bytes");
  expect_rejected(
      raw_file(R"({"s":{"dtype":"BF16","shape":[],"data_offsets":[0,0]}})", ""),
      "tensor 's' data_offsets [0, 0] but shape [] BF16 needs 2 bytes");
}

TEST_F(SafetensorsTest, RejectsUnknownDtype) {
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", std::string(4, 0)),
      "tensor 'a' has unknown dtype 'F31'");
  expect_rejected(
      raw_file(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", std::string(4, 0)),
      "dtype is not a string");
}

TEST_F(SafetensorsTest, RejectsNonStringMetadata) {
  expect_rejected(raw_file(R"({"__metadata__":{"k":1}})", ""),
                  "__metadata__ value for key 'k' is not a string");
  expect_rejected(raw_file(R"({"__metadata__":{"k":{"nested":"x"}}})", ""),
                  "__metadata__ value for key 'k' is not a string");
  expect_rejected(raw_file(R"({"__metadata__":["a"]})", ""), "__metadata__ is not a JSON object");
}

TEST_F(SafetensorsTest, RejectsMalformedEntries) {
  expect_rejected(raw_file(R"({"a":[1]})", ""), "tensor 'a' entry is not a JSON object");
  expect_rejected(raw_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, 0)),
                  "tensor 'a' has no dtype");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, 0)),
                  "tensor 'a' has no shape");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, 0)),
                  "tensor 'a' has no data_offsets");
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, 0)),
      "is negative");
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", std::string(4, 0)),
      "is not a non-negative integer");
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", std::string(4, 0)),
      "data_offsets is not an array [begin, end]");
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", std::string(4, 0)),
      "begin > end");
  expect_rejected(
      raw_file(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", std::string(2, 0)),
      "not a whole number of bytes");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
                           R"("data_offsets":[0,4]}})",
                           std::string(4, 0)),
                  "too large");
}

TEST_F(SafetensorsTest, GetOfMissingTensorNamesFileAndTensor) {
  const std::string p = file("g.safetensors");
  st::save(p, {{"present", torch::ones({1})}});
  auto f = st::File::open(p);
  expect_error([&] { f->get("missing"); }, p, "no tensor named 'missing'");
}

TEST_F(SafetensorsTest, OpenErrorsNameThePath) {
  const std::string p = file("does_not_exist.safetensors");
  expect_error([&] { st::File::open(p); }, p, "cannot open");
  expect_error([&] { st::File::open(dir_.string()); }, dir_.string(), "is a directory");
}

// ---------------------------------------------------------------------------------------------
// Writer errors

TEST_F(SafetensorsTest, SaveIntoMissingDirectoryFails) {
  const std::string p = file("no/such/dir/x.safetensors");
  expect_error([&] { st::save(p, {{"a", torch::ones({1})}}); }, p, "does not exist");
}

TEST_F(SafetensorsTest, SaveRejectsDuplicateAndReservedNamesAndBadTensors) {
  const std::string p = file("dup.safetensors");
  expect_error([&] { st::save(p, {{"a", torch::ones({1})}, {"a", torch::zeros({1})}}); }, p,
               "duplicate tensor name 'a'");
  expect_error([&] { st::save(p, {{"__metadata__", torch::ones({1})}}); }, p, "reserved");
  expect_error([&] { st::save(p, {{"u", at::Tensor()}}); }, p, "tensor 'u' is undefined");
  expect_error([&] { st::save(p, {{"c", torch::ones({1}, torch::kComplexDouble)}}); }, p,
               "tensor 'c'");
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(fs::is_empty(dir_));  // no temp file left behind either
}

TEST_F(SafetensorsTest, DtypeNamesMapBothWays) {
  const std::vector<std::pair<std::string, at::ScalarType>> pairs = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}, {"C64", at::kComplexFloat}};
  for (const auto& [name, type] : pairs) {
    EXPECT_EQ(st::to_scalar_type(name), type) << name;
    EXPECT_EQ(st::to_dtype_string(type), name) << name;
  }
  EXPECT_THROW(st::to_scalar_type("F31"), std::runtime_error);
  EXPECT_THROW(st::to_dtype_string(at::kComplexDouble), std::runtime_error);
}

// ---------------------------------------------------------------------------------------------
// Model directories

TEST_F(SafetensorsTest, ShardedSaveAndLoadAll) {
  torch::manual_seed(3);
  const st::NamedTensors tensors = {
      {"a", torch::randn({4})},                                        // 16 bytes
      {"b", torch::randn({4})},                                        // 16: fills shard to 32
      {"c", torch::randn({10})},                                       // 40 > limit: own shard
      {"d", torch::randint(0, 100, {2}, torch::kLong)},                // 16: opens a new shard
      {"e", torch::empty({0}, torch::kBFloat16)},                      // 0
  };
  const fs::path mdir = dir_ / "model";
  st::save_model(mdir.string(), tensors, 32);

  // huggingface_hub's greedy split: c is closed off at once, {a,b} when d does not fit.
  const std::map<std::string, std::string> want_map = {
      {"a", "model-00002-of-00003.safetensors"}, {"b", "model-00002-of-00003.safetensors"},
      {"c", "model-00001-of-00003.safetensors"}, {"d", "model-00003-of-00003.safetensors"},
      {"e", "model-00003-of-00003.safetensors"}};
  const std::string index_text = read_text(mdir / "model.safetensors.index.json");
  const json index = json::parse(index_text);
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), 88u);
  const auto weight_map = index.at("weight_map").get<std::map<std::string, std::string>>();
  EXPECT_EQ(weight_map, want_map);
  EXPECT_NE(index_text.find("\n  \"metadata\": {"), std::string::npos) << index_text;

  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(mdir)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"model-00001-of-00003.safetensors",
                                          "model-00002-of-00003.safetensors",
                                          "model-00003-of-00003.safetensors",
                                          "model.safetensors.index.json"}));
  for (int i = 1; i <= 3; ++i) {
    const std::string shard = "model-0000" + std::to_string(i) + "-of-00003.safetensors";
    auto f = st::File::open((mdir / shard).string());
    EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  }

  for (const std::string& src :
       {mdir.string(), (mdir / "model.safetensors.index.json").string()}) {
    const auto all = st::load_all(src);
    ASSERT_EQ(all.size(), tensors.size()) << src;
    for (const auto& [name, t] : tensors) expect_bit_equal(t, all.at(name), name);
  }
}

TEST_F(SafetensorsTest, SingleFileUnderTheLimitAndStaleShardsAreRemoved) {
  const fs::path mdir = dir_ / "m";
  st::save_model(mdir.string(), {{"x", torch::ones({8})}, {"y", torch::ones({8})}}, 40);
  ASSERT_TRUE(fs::exists(mdir / "model.safetensors.index.json"));

  // A later unsharded save must not leave the old index (load_all would prefer it).
  const st::NamedTensors small = {{"z", torch::full({2}, 5.0f)}};
  st::save_model(mdir.string(), small);
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(mdir)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, std::set<std::string>{"model.safetensors"});
  const auto all = st::load_all(mdir.string());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(torch::equal(all.at("z"), small[0].second));
  EXPECT_EQ(st::File::open((mdir / "model.safetensors").string())->metadata().at("format"), "pt");

  // A tensor alone above the limit is still one shard, so one plain file.
  st::save_model(mdir.string(), {{"big", torch::ones({100})}}, 16);
  EXPECT_TRUE(fs::exists(mdir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(mdir / "model.safetensors.index.json"));
}

TEST_F(SafetensorsTest, SaveModelRejectsDuplicateNames) {
  const std::string d = (dir_ / "dup").string();
  expect_error([&] { st::save_model(d, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}, 1); },
               d, "duplicate tensor name 'a'");
}

TEST_F(SafetensorsTest, IndexReferencingMissingFileFails) {
  const fs::path mdir = dir_ / "broken";
  st::save_model(mdir.string(), {{"a", torch::ones({4})}, {"b", torch::ones({4})}}, 16);
  fs::remove(mdir / "model-00002-of-00002.safetensors");
  const std::string index = (mdir / "model.safetensors.index.json").string();
  expect_error([&] { st::load_all(mdir.string()); }, index,
               "weight_map lists 'model-00002-of-00002.safetensors' (for tensor 'b') but " +
                   (mdir / "model-00002-of-00002.safetensors").string() + " does not exist");
}

TEST_F(SafetensorsTest, IndexNameAbsentFromItsFileFails) {
  const fs::path mdir = dir_ / "liar";
  fs::create_directories(mdir);
  st::save((mdir / "part.safetensors").string(), {{"a", torch::ones({1})}});
  const std::string index = (mdir / "model.safetensors.index.json").string();
  write_text(index, R"({"metadata":{"total_size":8},)"
                    R"("weight_map":{"a":"part.safetensors","ghost":"part.safetensors"}})");
  expect_error([&] { st::load_all(mdir.string()); }, index,
               "tensor 'ghost' in 'part.safetensors' but " + (mdir / "part.safetensors").string() +
                   " does not contain it");

  write_text(index, R"({"metadata":{}})");
  expect_error([&] { st::load_all(mdir.string()); }, index, "weight_map");
  write_text(index, "{not json");
  expect_error([&] { st::load_all(mdir.string()); }, index, "not valid JSON");
}

TEST_F(SafetensorsTest, LoadAllOfDirectoryWithoutWeightsFails) {
  expect_error([&] { st::load_all(dir_.string()); }, dir_.string(),
               "neither model.safetensors.index.json nor model.safetensors");
  const std::string missing = file("nowhere");
  expect_error([&] { st::load_all(missing); }, missing, "no such file or directory");
}

}  // namespace
