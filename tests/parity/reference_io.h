// Running the Python references in tests/reference and reading their batch files; shared by
// the parity tests of each model family.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/collator.h"

namespace ftrun::testing {

// The references need torch; Debian's interpreter has it (python3-torch).
inline std::string reference_python() {
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

// The venv with the real transformers / PEFT (.ci/install-pyref) and its interpreter.
inline const std::string& pyref_python() {
  static const std::string p = FTRUN_BINARY_DIR "/pyref/bin/python";
  return p;
}

// Fails the test (fatally) naming the command that installs the real references.
inline void require_pyref() {
  ASSERT_TRUE(std::filesystem::exists(pyref_python()))
      << "the real transformers/PEFT references are not installed (no " << pyref_python()
      << "): run `bash .ci/install-pyref` from the repository root (README: Tests)";
}

// Runs `cmd` with stdout and stderr in `log`; the log is printed when the command fails.
inline void run_logged(const std::string& cmd, const std::filesystem::path& log) {
  int rc = std::system((cmd + " > '" + log.string() + "' 2>&1").c_str());
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(rc, 0) << "command failed: " << cmd << "\n" << text;
}

inline void run_reference(const std::string& cmd) {
  int rc = std::system((cmd + " > /dev/null").c_str());
  ASSERT_EQ(rc, 0) << "reference command failed: " << cmd;
}

// {"batches": [{"input_ids", "attention_mask", "labels"}, ...]} -> right-padded Batches.
inline std::vector<data::Batch> load_reference_batches(const nlohmann::json& j) {
  auto to_tensor = [](const nlohmann::json& rows) {
    std::vector<int64_t> flat;
    for (const auto& row : rows)
      for (const auto& v : row) flat.push_back(v.get<int64_t>());
    return torch::tensor(flat, torch::kLong).view({int64_t(rows.size()), -1});
  };
  std::vector<data::Batch> out;
  for (const auto& b : j["batches"]) {
    data::Batch batch;
    batch.input_ids = to_tensor(b["input_ids"]);
    batch.attention_mask = to_tensor(b["attention_mask"]);
    batch.labels = to_tensor(b["labels"]);
    batch.num_label_tokens = (batch.labels.narrow(1, 1, batch.labels.size(1) - 1) != -100).sum().item<int64_t>();
    out.push_back(batch);
  }
  return out;
}

}  // namespace ftrun::testing
