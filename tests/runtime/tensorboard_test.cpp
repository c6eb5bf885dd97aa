// TensorBoard event files (runtime/tensorboard.h): the TFRecord framing against independent
// CRC32C values (RFC 3720's test vectors; the masked values as TensorBoard's own Python
// masked_crc32c computes them), HF's tags, and the writer's no-duplicates rule on restart.
// TensorBoard's real reader is run on ftrun's files by tests/e2e/tensorboard_test.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "runtime/tensorboard.h"

namespace fs = std::filesystem;
using namespace ftrun::runtime;
using nlohmann::json;

namespace {

std::string bytes(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s.push_back(char(b));
  return s;
}

struct TmpDir {
  fs::path path;
  TmpDir() {
    char tmpl[] = "/tmp/ftrun_tb_test.XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TmpDir() { fs::remove_all(path); }
};

std::map<std::string, std::vector<std::pair<int64_t, float>>> by_tag(const std::string& dir) {
  std::map<std::string, std::vector<std::pair<int64_t, float>>> m;
  for (const auto& s : read_tensorboard_scalars(dir)) m[s.tag].push_back({s.step, s.value});
  return m;
}

size_t event_files(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  return n;
}

}  // namespace

// RFC 3720 (iSCSI), appendix B.4: CRC32C of 32 zero bytes, 32 0xff bytes, 0..31, 31..0 and
// of a 48-byte SCSI read command PDU; plus the standard check value of "123456789".
TEST(TfRecord, Crc32cKnownVectors) {
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string inc, dec;
  for (int i = 0; i < 32; ++i) {
    inc.push_back(char(i));
    dec.push_back(char(31 - i));
  }
  EXPECT_EQ(crc32c(inc), 0x46DD794Eu);
  EXPECT_EQ(crc32c(dec), 0x113FDB5Cu);
  const std::string pdu = bytes({0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                                 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
  EXPECT_EQ(crc32c(pdu), 0xD9963A56u);
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);

  // Masked as TFRecord stores them; values from tensorboard 2.19's pure-Python
  // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
  EXPECT_EQ(masked_crc32c(std::string(32, '\0')), 0x0fd7fffau);
  EXPECT_EQ(masked_crc32c(std::string(32, '\xff')), 0xf909b029u);
  EXPECT_EQ(masked_crc32c(inc), 0x951f7892u);
  EXPECT_EQ(masked_crc32c(dec), 0x593b0d57u);
  EXPECT_EQ(masked_crc32c("123456789"), 0xc78ab0e5u);
}

TEST(TfRecord, FrameLayoutAndReadBack) {
  const std::string frame = tfrecord_frame("hello");
  ASSERT_EQ(frame.size(), 8u + 4 + 5 + 4);
  EXPECT_EQ(frame.substr(0, 8), bytes({5, 0, 0, 0, 0, 0, 0, 0}));  // uint64 little-endian length
  // masked CRC of the 8 length bytes (tensorboard: masked_crc32c(struct.pack('<Q', 5)) = 0x3e04b2ea)
  EXPECT_EQ(frame.substr(8, 4), bytes({0xea, 0xb2, 0x04, 0x3e}));
  EXPECT_EQ(frame.substr(12, 5), "hello");
  const uint32_t c = masked_crc32c("hello");
  EXPECT_EQ(frame.substr(17, 4), bytes({int(c & 0xff), int((c >> 8) & 0xff), int((c >> 16) & 0xff), int(c >> 24)}));

  const std::string two = tfrecord_frame("a") + tfrecord_frame(std::string(1000, 'x')) + tfrecord_frame("");
  std::string err = "unset";
  auto recs = read_tfrecords(two, &err);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[1], std::string(1000, 'x'));
  EXPECT_EQ(recs[2], "");
  EXPECT_EQ(err, "");

  // a torn tail (a run killed mid-write) ends the list with a reason
  recs = read_tfrecords(two.substr(0, two.size() - 3), &err);
  EXPECT_EQ(recs.size(), 2u);
  EXPECT_NE(err.find("record 2"), std::string::npos) << err;
  std::string bad = two;
  bad[8 + 4 + 1 + 4 + 12 + 500] ^= 1;  // a flipped payload bit in record 1
  recs = read_tfrecords(bad, &err);
  EXPECT_EQ(recs.size(), 1u);
  EXPECT_NE(err.find("payload CRC mismatch"), std::string::npos) << err;
}

TEST(TensorBoard, HfTags) {
  EXPECT_EQ(tensorboard_tag("loss"), "train/loss");
  EXPECT_EQ(tensorboard_tag("learning_rate"), "train/learning_rate");
  EXPECT_EQ(tensorboard_tag("eval_loss"), "eval/loss");
  EXPECT_EQ(tensorboard_tag("eval_rouge-1"), "eval/rouge-1");
  EXPECT_EQ(tensorboard_tag("test_bleu-4"), "test/bleu-4");
  EXPECT_EQ(tensorboard_tag("epoch"), "train/epoch");
}

TEST(TensorBoard, DefaultLoggingDirIsHfs) {
  const fs::path d = default_logging_dir("/out");
  EXPECT_EQ(d.parent_path(), fs::path("/out/runs"));
  // <Mon><DD>_<HH>-<MM>-<SS>_<host>
  const std::string name = d.filename().string();
  ASSERT_GT(name.size(), 15u);
  EXPECT_EQ(name[5], '_');
  EXPECT_EQ(name[8], '-');
  EXPECT_EQ(name[11], '-');
  EXPECT_EQ(name[14], '_');
  EXPECT_EQ(resolve_logging_dir("/mine", "/out", true), "/mine");
}

TEST(TensorBoard, WritesScalarsOnceAndRestartsWithoutDuplicates) {
  TmpDir tmp;
  const std::string dir = (tmp.path / "runs" / "r").string();
  {
    TensorBoardWriter w(dir, 0);
    for (int s = 1; s <= 6; ++s) w.write({{"step", s}, {"epoch", s / 4.0}, {"loss", 2.0 / s}, {"learning_rate", 1e-3}});
    // an eval record at the same step repeats the epoch: one train/epoch per step
    w.write({{"step", 4}, {"epoch", 1.0}, {"eval_loss", 0.75}, {"eval_rouge-1", 12.5}});
    w.write({{"step", 5}, {"loss", std::nan("")}, {"flag", true}});  // nothing new: no event
  }
  auto m = by_tag(dir);
  ASSERT_EQ(m["train/loss"].size(), 6u);
  EXPECT_EQ(m["train/loss"][2], std::make_pair(int64_t(3), float(2.0 / 3)));
  EXPECT_EQ(m["train/epoch"].size(), 6u);
  EXPECT_EQ(m["eval/loss"], (std::vector<std::pair<int64_t, float>>{{4, 0.75f}}));
  EXPECT_EQ(m["eval/rouge-1"].size(), 1u);
  EXPECT_EQ(m.count("train/flag"), 0u);
  EXPECT_EQ(m.count("train/step"), 0u);

  // A restart from step 3 (resume from checkpoint-3): steps 4-6 of the first file are removed,
  // the new file takes over from 4, and re-logging step 3 (already there) writes nothing.
  std::string second;
  {
    TensorBoardWriter w(dir, 3);
    second = w.path();
    w.write({{"step", 3}, {"loss", 99.0}});
    for (int s = 4; s <= 8; ++s) w.write({{"step", s}, {"epoch", s / 4.0}, {"loss", 1.0 / s}});
  }
  EXPECT_EQ(event_files(dir), 2u);
  EXPECT_EQ(fs::path(second).filename(), [&] {  // the new file sorts last
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    return *std::max_element(names.begin(), names.end());
  }());
  m = by_tag(dir);
  std::vector<std::pair<int64_t, float>> want;
  for (int s = 1; s <= 3; ++s) want.push_back({s, float(2.0 / s)});
  for (int s = 4; s <= 8; ++s) want.push_back({s, float(1.0 / s)});
  EXPECT_EQ(m["train/loss"], want);
  EXPECT_EQ(m.count("eval/loss"), 0u);  // it was at step 4, after the restart point
  EXPECT_EQ(m["train/epoch"].size(), 8u);

  // a torn tail left by a kill is cut off on the next start, and nothing else is lost
  const fs::path last = second;
  fs::resize_file(last, fs::file_size(last) - 5);
  // and the temp file of a rewrite that was killed goes too (TensorBoard would read it)
  const fs::path stale = fs::path(dir) / "events.out.tfevents.0000000001.h.1.0.tmp.99";
  std::ofstream(stale) << tfrecord_frame("garbage");
  { TensorBoardWriter w(dir, 100); }
  EXPECT_FALSE(fs::exists(stale));
  m = by_tag(dir);
  EXPECT_EQ(m["train/loss"].size(), 7u);  // step 8's event was the torn one
  EXPECT_EQ(m["train/loss"].back().first, 7);
}

TEST(TensorBoard, ResumeFindsTheRunDirectory) {
  TmpDir tmp;
  const std::string out = tmp.path.string();
  EXPECT_EQ(fs::path(resolve_logging_dir("", out, true)).parent_path(), tmp.path / "runs");  // none yet
  { TensorBoardWriter w((tmp.path / "runs" / "Jan01_00-00-00_a").string(), 0); }
  fs::create_directories(tmp.path / "runs" / "empty");
  EXPECT_EQ(resolve_logging_dir("", out, true), (tmp.path / "runs" / "Jan01_00-00-00_a").string());
  EXPECT_NE(resolve_logging_dir("", out, false), (tmp.path / "runs" / "Jan01_00-00-00_a").string());
}
