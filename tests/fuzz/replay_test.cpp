// fuzz_replay_test: the fuzz targets of tests/fuzz/ (built here by GCC, without libFuzzer)
// replayed over the committed seed corpus (corpus/<target>/) and the regression inputs the
// fuzzers found (regressions/<target>/), in the regular build and ctest run.
// Expected outcomes, by file name: ok-* must be accepted, bad-* must be rejected with an error;
// a regression input may carry a sibling <name>.expect holding a substring its error must
// contain (the clear one-line error that replaced the crash, hang or raw library message).
// Every input must finish without crashing (the ctest timeout bounds a hang).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/fuzz/fuzz_util.h"

namespace fs = std::filesystem;

namespace {

const fs::path kFuzzDir = fs::path(FTRUN_SOURCE_DIR) / "tests" / "fuzz";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<fs::path> inputs(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() != ".expect" && e.path().filename().string()[0] != '.')
        files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// Replays every input of one target; returns how many it ran.
size_t replay(const std::string& target, const fs::path& dir) {
  const auto it = ftrun::fuzz::registry().find(target);
  if (it == ftrun::fuzz::registry().end()) {
    ADD_FAILURE() << "no fuzz target named " << target;
    return 0;
  }
  size_t n = 0;
  for (const auto& file : inputs(dir)) {
    const std::string bytes = slurp(file), name = file.filename().string();
    const auto t0 = std::chrono::steady_clock::now();
    const std::string got = it->second(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Small inputs: one must never take long (libFuzzer's -timeout in .ci/fuzz is 10 s).
    EXPECT_LT(s, 10.0) << file;
    if (name.rfind("ok-", 0) == 0) {
      EXPECT_EQ(got, "") << file << " must be accepted";
    }
    if (name.rfind("bad-", 0) == 0) {
      EXPECT_NE(got, "") << file << " must be rejected";
    }
    fs::path expect = file;
    expect += ".expect";
    if (fs::exists(expect)) {
      std::string want = slurp(expect);
      while (!want.empty() && (want.back() == '\n' || want.back() == '\r')) want.pop_back();
      EXPECT_NE(got.find(want), std::string::npos) << file << ": error '" << got << "' lacks '" << want << "'";
      // One line, as every ftrun error: no raw library dump of stack frames.
      EXPECT_EQ(got.find("frame #"), std::string::npos) << file << ": " << got;
    }
    ++n;
  }
  return n;
}

class FuzzReplay : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzReplay, SeedCorpus) {
  // A handful of seeds each, valid and near-valid (tests/fuzz/make_corpus.py).
  EXPECT_GE(replay(GetParam(), kFuzzDir / "corpus" / GetParam()), 4u);
}

TEST_P(FuzzReplay, Regressions) { replay(GetParam(), kFuzzDir / "regressions" / GetParam()); }

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay,
                         ::testing::Values("config", "deepspeed", "dataset", "tokenizer_config", "tokenizer_json",
                                           "safetensors", "checkpoint"),
                         [](const auto& info) { return info.param; });

TEST(FuzzReplay, EveryTargetHasACorpus) {
  // Every registered target is replayed above and has a seed directory for .ci/fuzz.
  EXPECT_EQ(ftrun::fuzz::registry().size(), 7u);
  for (const auto& [name, fn] : ftrun::fuzz::registry())
    EXPECT_TRUE(fs::is_directory(kFuzzDir / "corpus" / name)) << name;
}

}  // namespace
