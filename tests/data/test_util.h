// Shared fixtures for the data tests: scratch directories and one tiny tokenizer trained on
// the shipped sample corpus (training is deterministic, so every test sees the same ids).
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace ftrun::data::testing {

namespace fs = std::filesystem;

// Llama-3's specials in Llama-3's order, so the ids map like the real model's (sp_size + i).
inline const std::vector<std::string>& llama3_specials() {
  static const std::vector<std::string> s = {"<|begin_of_text|>", "<|end_of_text|>",
                                             "<|start_header_id|>", "<|end_header_id|>",
                                             "<|eot_id|>"};
  return s;
}

inline std::string corpus_path() {
  return std::string(FTRUN_SOURCE_DIR) + "/examples/tiny/tokenizer_corpus.txt";
}

// A fresh directory under the system temp dir, removed when the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("ftrun_data_test_" + std::to_string(::getpid()) + "_" + tag + "_" +
             std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name, std::ios::binary) << text;
    return file(name);
  }

 private:
  fs::path path_;
};

constexpr int kTinyVocab = 512;

// Trained once per test binary.
inline const Tokenizer& tiny_tokenizer() {
  static TempDir dir("tok");
  static std::unique_ptr<Tokenizer> tok = [] {
    train_tokenizer(corpus_path(), dir.path(), kTinyVocab, llama3_specials());
    return load_tokenizer(dir.path());
  }();
  return *tok;
}

inline std::vector<int64_t> cat(std::initializer_list<std::vector<int64_t>> parts) {
  std::vector<int64_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Asserts that `fn` throws and that the message holds every one of `needles`.
template <class Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception containing '" << needles.front() << "'";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "message: " << msg << "\nmissing: " << n;
  }
}

}  // namespace ftrun::data::testing
