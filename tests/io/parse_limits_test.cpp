// Bounded parsing (issue 16): every JSON input ftrun reads is parsed under limits on its size,
// nesting and value count, and a file past them fails at once with one line naming it. The
// limits themselves come from the issue ("a few MB", "some thousands of nodes"); the inputs
// here are built to be just inside and just past them.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/file.h"

namespace fs = std::filesystem;
namespace io = ftrun::io;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "ftrun-parse-limits-XXXXXX").string();
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

bool one_line(const std::string& s) { return s.find('\n') == std::string::npos; }

}  // namespace

TEST(ParseLimits, DeepNestingNamesTheFileAndLine) {
  TempDir d;
  const auto p = d.path / "config.json";
  // 64 levels pass; 65 do not. The 65th '[' sits on line 2.
  write(p, std::string(64, '[') + std::string(64, ']'));
  EXPECT_NO_THROW(io::read_json_file(p));
  write(p, std::string(64, '[') + "\n[" + std::string(65, ']'));
  const auto msg = error_of([&] { io::read_json_file(p); });
  EXPECT_EQ(msg, p.string() + ":2: JSON nested deeper than 64 levels (the limit for this kind of file)");
  // Brackets inside strings are text, not nesting.
  write(p, "{\"chat_template\": \"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"}");
  EXPECT_EQ(io::read_json_file(p)["chat_template"].get<std::string>().size(), 2001u);
}

TEST(ParseLimits, HugeNestingFailsFastWithoutTheStack) {
  TempDir d;
  const auto p = d.path / "layout.json";
  write(p, std::string(5'000'000, '['));  // 5 MB of '[': nlohmann would build 5M nested arrays
  const auto t0 = std::chrono::steady_clock::now();
  const auto msg = error_of([&] { io::read_json_file(p); });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ(msg, p.string() + ": JSON nested deeper than 64 levels (the limit for this kind of file)");
}

TEST(ParseLimits, SizeAndValueCount) {
  TempDir d;
  const auto big = d.path / "adapter_config.json";
  write(big, "{\"a\": \"" + std::string(9u << 20, 'x') + "\"}");
  auto msg = error_of([&] { io::read_json_file(big, "PEFT adapter config"); });
  EXPECT_EQ(msg.rfind(big.string() + ": 9.0 MiB, more than the 8.0 MiB limit for PEFT adapter config", 0), 0u) << msg;
  EXPECT_TRUE(one_line(msg));

  const auto many = d.path / "many.json";
  std::string arr = "[0";
  for (int i = 0; i < 200'000; ++i) arr += ",0";
  write(many, arr + "]");  // 200,001 scalars + the array: past the 200,000 values of a small file
  msg = error_of([&] { io::read_json_file(many); });
  EXPECT_EQ(msg, many.string() + ": more than 200000 JSON values (the limit for this kind of file)");

  // trainer_state.json carries the run's whole log_history: its limits are a log's.
  const auto state = d.path / "trainer_state.json";
  write(state, arr + "]");
  EXPECT_EQ(io::read_json_file(state).size(), 200'001u);
}

TEST(ParseLimits, EndlessInputIsCutAtTheLimit) {
  // /dev/zero as a JSON file: read up to the limit, not until memory runs out.
  const auto msg = error_of([&] { io::read_json_file("/dev/zero", "DeepSpeed config (training_args.deepspeed)"); });
  EXPECT_EQ(msg, "/dev/zero: longer than the 8.0 MiB limit for DeepSpeed config (training_args.deepspeed) (is it the right file?)");
}

TEST(ParseLimits, EmptyAndGarbageNameTheFile) {
  TempDir d;
  const auto p = d.path / "trainer_state.json";
  write(p, "");
  EXPECT_EQ(error_of([&] { io::read_json_file(p); }), p.string() + ": invalid JSON: the file is empty (expected a JSON document)");
  write(p, " \n\t");
  EXPECT_EQ(error_of([&] { io::read_json_file(p); }), p.string() + ": invalid JSON: the file is empty (expected a JSON document)");
  write(p, "\x01\x02garbage");
  const auto msg = error_of([&] { io::read_json_file(p); });
  EXPECT_EQ(msg.rfind(p.string() + ": invalid JSON: ", 0), 0u) << msg;
  EXPECT_TRUE(one_line(msg)) << msg;
}

TEST(ParseLimits, CheckShapeAloneAndJsonErrorText) {
  EXPECT_NO_THROW(io::check_json_shape("{\"a\": [1, 2, {\"b\": null}]}", "x", io::kDataJsonLimits));
  EXPECT_EQ(error_of([&] { io::check_json_shape(std::string(129, '{'), "data.jsonl:7", io::kDataJsonLimits); }),
            "data.jsonl:7: JSON nested deeper than 128 levels (the limit for this kind of file)");
  // nlohmann's "[json.exception.out_of_range.403] " prefix goes; the message stays.
  const auto j = nlohmann::json::object();
  EXPECT_EQ(error_of([&] {
              try {
                (void)j.at("position");
              } catch (const nlohmann::json::exception& e) {
                throw std::runtime_error(io::json_error_text(e));
              }
            }),
            "key 'position' not found");
}
