// io/output.h: a target that is not ftrun's output of the same kind is refused with an error
// naming it (a file, a user's directory) unless overwrite is explicit; path_within compares
// whole components; write_atomic removes temp files a dead writer left behind.
#include "io/output.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "io/file.h"
#include "testing/errors.h"

namespace fs = std::filesystem;
using namespace ftrun;
using ftrun::testing::error_of;

TEST(OutputGuard, OnlyFtrunsOwnOutputOfTheKindIsReplaced) {
  ftrun::testing::ScratchDir t;
  auto check = [&](const fs::path& p, bool overwrite = false) {
    return error_of([&] { io::check_replaceable(p, "model", "an ftrun model directory", overwrite, "pass --overwrite"); });
  };
  EXPECT_EQ(check(t.path / "new"), "(no error)");
  fs::create_directories(t.path / "empty");
  EXPECT_EQ(check(t.path / "empty"), "(no error)");
  std::ofstream(t.path / "notes.txt") << "notes\n";
  EXPECT_EQ(check(t.path / "notes.txt"),
            (t.path / "notes.txt").string() + ": exists and is not an ftrun model directory (a file); refusing to replace "
            "it: choose another path, or pass --overwrite to replace it");
  EXPECT_EQ(check(t.path / "notes.txt", true), "(no error)");
  fs::create_directories(t.path / "user");
  std::ofstream(t.path / "user" / "config.json") << "{}";
  EXPECT_NE(check(t.path / "user").find("user: exists and is not an ftrun model directory (a directory without a "
                                        ".ftrun_output marker of kind 'model')"),
            std::string::npos);
  io::write_output_marker(t.path / "user", "training", "ftrun");
  EXPECT_NE(check(t.path / "user"), "(no error)");  // another kind
  io::write_output_marker(t.path / "user", "model", "ftrun merge");
  EXPECT_EQ(io::output_kind(t.path / "user"), "model");
  EXPECT_EQ(check(t.path / "user"), "(no error)");
  // Outputs without a marker: the caller's recognizer.
  EXPECT_EQ(error_of([&] {
              io::check_replaceable(t.path / "notes.txt", "p", "p", false, "f", [](const fs::path&) { return true; });
            }),
            "(no error)");
}

TEST(OutputGuard, PathWithinComparesWholeComponents) {
  ftrun::testing::ScratchDir t;
  fs::create_directories(t.path / "model" / "sub");
  EXPECT_TRUE(io::path_within(t.path / "model", t.path / "model"));
  EXPECT_TRUE(io::path_within(t.path / "model/", t.path / "model"));
  EXPECT_TRUE(io::path_within(t.path / "model" / "sub" / "out", t.path / "model"));
  EXPECT_TRUE(io::path_within(t.path / "x" / ".." / "model" / "out", t.path / "model"));
  EXPECT_FALSE(io::path_within(t.path / "model2", t.path / "model"));
  EXPECT_FALSE(io::path_within(t.path, t.path / "model"));
  fs::create_directory_symlink(t.path / "model", t.path / "link");
  EXPECT_TRUE(io::path_within(t.path / "link" / "out", t.path / "model"));
}

TEST(OutputGuard, TempFilesOfADeadWriterAreRemoved) {
  ftrun::testing::ScratchDir t;
  // A pid that is certainly dead: a child that has exited and been reaped.
  pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  const auto stale = t.path / ("a.txt.tmp." + std::to_string(child) + ".0");
  const auto live = t.path / ("a.txt.tmp." + std::to_string(getppid()) + ".0");  // alive: left alone
  std::ofstream(stale) << "half";
  std::ofstream(live) << "busy";
  std::ofstream(t.path / "b.txt.tmp.1.0") << "other target";
  io::write_file_atomic(t.path / "a.txt", "new");
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(t.path / "b.txt.tmp.1.0"));
  EXPECT_EQ(io::read_text_file(t.path / "a.txt"), "new");
}
