// Running the Python references in tests/reference and reading their batch files; shared by
// the parity tests of each model family.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/collator.h"

namespace ftrun::testing {

// The references need torch; Debian's interpreter has it (python3-torch).
inline std::string reference_python() {
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
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
