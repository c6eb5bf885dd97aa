// Bounded config parsing (issue 16): a YAML "billion laughs" alias bomb, deep nesting, an
// oversized or endless file each fail at once with one line naming the file (and line and key
// where there is one), instead of minutes of CPU, gigabytes and std::bad_alloc or yaml-cpp's
// bare "bad file"; num_train_epochs whose step count overflows int64 is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/config.h"

namespace fs = std::filesystem;
using ftrun::runtime::load_config;

namespace {

const char* kBase =
    "data_config:\n"
    "  train_file: train.jsonl\n"
    "max_input_length: 64\n"
    "max_output_length: 32\n";

// The nine-line bomb of the issue: 9^9 = 387,420,489 strings once the aliases are expanded.
std::string bomb(const std::string& indent) {
  std::string s, prev = "\"lol\"";
  const char* names = "abcdefghi";
  for (int i = 0; i < 9; ++i) {
    s += indent + names[i] + ": &" + names[i] + " [";
    for (int k = 0; k < 9; ++k) s += (k ? "," : "") + prev;
    s += "]\n";
    prev = std::string("*") + names[i];
  }
  return s;
}

class ConfigBounds : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "ftrun-config-bounds-XXXXXX").string();
    ASSERT_NE(mkdtemp(t.data()), nullptr);
    dir_ = t;
    path_ = (fs::path(dir_) / "c.yaml").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
    std::ofstream(path_, std::ios::binary) << text;
    try {
      load_config(path_, sets);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
  std::string dir_, path_;
};

TEST_F(ConfigBounds, AliasBombUnderAnyKeyFailsFast) {
  for (const auto& [text, where] : std::vector<std::pair<std::string, std::string>>{
           // The 20,001st node lies in the fifth level of aliases (e = 9 x d = 66,430 nodes);
           // the line is where the aliased node was written: the first line of the bomb.
           {std::string(kBase) + "lol:\n" + bomb("  "), ":6: lol.e["},
           {std::string(kBase) + "training_args:\n  x:\n" + bomb("    "), ":7: training_args.x.e["},
           {bomb("") + kBase, ":1: e["}}) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto msg = error_of(text);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1)) << msg;
    EXPECT_EQ(msg.rfind(path_ + where, 0), 0u) << msg;
    EXPECT_NE(msg.find("]: the document expands to more than 20000 nodes (a config has a few hundred; YAML aliases"),
              std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // The same bomb as a --set value.
  std::string value = "{";
  for (int i = 0; i < 5; ++i) {
    value += std::string(i ? ", " : "") + "k" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 9; ++k) value += (k ? "," : "") + (i ? "*a" + std::to_string(i - 1) : std::string("1"));
    value += "]";
  }
  const auto msg = error_of(kBase, {"training_args.x=" + value + "}"});
  EXPECT_NE(msg.find("--set 'training_args.x="), std::string::npos) << msg;
  EXPECT_NE(msg.find("the document expands to more than 20000 nodes"), std::string::npos) << msg;
}

TEST_F(ConfigBounds, DeepNestingSaysSo) {
  // 65 levels: past ftrun's 64.
  auto msg = error_of(std::string(kBase) + "a: " + std::string(65, '[') + std::string(65, ']') + "\n");
  EXPECT_EQ(msg.rfind(path_ + ":5: a", 0), 0u) << msg;
  EXPECT_NE(msg.find("nested deeper than 64 levels (a config nests a few)"), std::string::npos) << msg;
  // 20,000 levels: yaml-cpp's own guard, which used to say only "bad file".
  msg = error_of(std::string(kBase) + "a: " + std::string(20000, '[') + std::string(20000, ']') + "\n");
  EXPECT_EQ(msg, path_ + ":5: nested deeper than 64 levels (a config nests a few)");
  msg = error_of(kBase, {"x=" + std::string(20000, '[') + std::string(20000, ']')});
  EXPECT_NE(msg.find("value nested deeper than 64 levels"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("bad file"), std::string::npos) << msg;
}

TEST_F(ConfigBounds, SizeIsBounded) {
  const auto msg = error_of(std::string(kBase) + "# " + std::string(5u << 20, 'x') + "\n");
  EXPECT_EQ(msg, path_ + ": longer than 4 MiB, the limit for a config file (a real one is a few KB; is it the right file?)");
  try {
    load_config("/dev/zero");
    FAIL() << "/dev/zero loaded";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/dev/zero: longer than 4 MiB", 0), 0u) << e.what();
  }
}

TEST_F(ConfigBounds, EpochsWhoseStepCountOverflowsAreRefused) {
  const auto msg = error_of(std::string(kBase) + "training_args:\n  num_train_epochs: 1e30\n");
  EXPECT_NE(msg.find(path_ + ":6: training_args.num_train_epochs: must be at most 1e9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got 1e+30"), std::string::npos) << msg;
  EXPECT_NE(error_of(std::string(kBase) + "training_args:\n  num_train_epochs: .nan\n"), "");
  EXPECT_EQ(error_of(std::string(kBase) + "training_args:\n  num_train_epochs: 1000000\n"), "");
  // max_steps decides the step count: then epochs do not matter (as in HF).
  EXPECT_EQ(error_of(std::string(kBase) + "training_args:\n  num_train_epochs: 1e30\n  max_steps: 5\n"), "");
}

}  // namespace
