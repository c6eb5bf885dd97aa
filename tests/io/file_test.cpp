// io/file.h: atomic writes leave either the old or the new file and never a temp file; reads
// name the file and what is wrong with it.
#include "io/file.h"
#include "testing/errors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

using TempDir = ftrun::testing::ScratchDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t entries(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().empty() ? 0 : 1;
  return n;
}

using ftrun::testing::error_of;

}  // namespace

TEST(IoFile, WritesAndReplacesWithoutLeavingTempFiles) {
  TempDir d;
  const auto p = d.path / "a.txt";
  io::write_file_atomic(p, "first");
  EXPECT_EQ(slurp(p), "first");
  io::write_file_atomic(p, "second, longer");
  EXPECT_EQ(slurp(p), "second, longer");
  EXPECT_EQ(entries(d.path), 1u);  // no "a.txt.tmp.*" left behind
}

TEST(IoFile, FailedFillKeepsTheOldFileAndRemovesTheTemp) {
  TempDir d;
  const auto p = d.path / "keep.json";
  io::write_json_atomic(p, {{"v", 1}});
  const std::string before = slurp(p);
  EXPECT_THROW(io::write_atomic(p,
                                [&](int fd) {
                                  io::write_all(fd, "partial", 7, p);
                                  throw std::runtime_error("disk on fire");
                                }),
               std::runtime_error);
  EXPECT_EQ(slurp(p), before);
  EXPECT_EQ(entries(d.path), 1u);
  EXPECT_EQ(io::read_json_file(p)["v"], 1);
}

TEST(IoFile, MissingDirectoryIsAnErrorNamingIt) {
  TempDir d;
  const auto p = d.path / "nope" / "x.json";
  auto msg = error_of([&] { io::write_json_atomic(p, nlohmann::json::object()); });
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(p));
}

TEST(IoFile, JsonReaderNamesTheFileAndTheProblem) {
  TempDir d;
  const auto missing = d.path / "missing.json";
  auto msg = error_of([&] { io::read_json_file(missing, "DeepSpeed config"); });
  EXPECT_EQ(msg.rfind(missing.string() + ": cannot open DeepSpeed config: ", 0), 0u) << msg;

  const auto bad = d.path / "bad.json";
  io::write_file_atomic(bad, "{\"a\": [1, 2");
  msg = error_of([&] { io::read_json_file(bad); });
  EXPECT_EQ(msg.rfind(bad.string() + ": invalid JSON: ", 0), 0u) << msg;

  msg = error_of([&] { io::read_json_file(d.path); });
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;

  const auto good = d.path / "good.json";
  io::write_json_atomic(good, {{"k", {1, 2, 3}}});
  EXPECT_EQ(io::read_json_file(good)["k"].size(), 3u);
  EXPECT_EQ(slurp(good).back(), '\n');
}

TEST(IoFile, FsyncTreeVisitsEveryFile) {
  TempDir d;
  fs::create_directories(d.path / "sub");
  io::write_file_atomic(d.path / "sub" / "f", "x");
  EXPECT_NO_THROW(io::fsync_tree(d.path));
  auto msg = error_of([&] { io::fsync_path(d.path / "absent"); });
  EXPECT_NE(msg.find("absent"), std::string::npos) << msg;
}
