// Running the Python references in tests/reference and reading their batch files; shared by
// the parity tests of each model family.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/collator.h"
#include "models/model.h"
#include "models/safetensors.h"

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

// An int64 [rows, n] tensor as a JSON array of rows (the batch files' format).
inline nlohmann::json rows_json(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t r = 0; r < t.size(0); ++r) {
    auto row = t[r].contiguous();
    out.push_back(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()));
  }
  return out;
}

// Two right-padded micro-batches of random ids over the whole vocabulary (special tokens
// included): [2, 16] with the second row's last 5 positions padding, and [1, 48].
inline nlohmann::json make_batches(int64_t vocab, int64_t pad_id) {
  torch::manual_seed(11);
  nlohmann::json batches = nlohmann::json::array();
  for (auto [rows, len, pad] : {std::tuple<int64_t, int64_t, int64_t>{2, 16, 5}, {1, 48, 0}}) {
    auto ids = torch::randint(vocab, {rows, len}, torch::kLong);
    auto mask = torch::ones({rows, len}, torch::kLong);
    if (pad > 0) {
      mask[rows - 1].narrow(0, len - pad, pad).fill_(0);
      ids[rows - 1].narrow(0, len - pad, pad).fill_(pad_id);
    }
    auto labels = ids.masked_fill(mask == 0, -100);
    batches.push_back({{"input_ids", rows_json(ids)}, {"attention_mask", rows_json(mask)}, {"labels", rows_json(labels)}});
  }
  return {{"batches", batches}};
}

// Max |ours - theirs| over the positions the attention mask keeps.
inline double max_diff(const at::Tensor& ours, const at::Tensor& theirs, const at::Tensor& mask) {
  auto valid = mask.to(torch::kBool).unsqueeze(-1).expand_as(ours);
  return (ours - theirs).abs().masked_select(valid).max().item<double>();
}

// A reference's logits file (F32 `<key>.<i>` per micro-batch) and the batches it was run on.
struct ReferenceLogits {
  std::vector<data::Batch> batches;
  std::filesystem::path file;
};

// Max |ftrun - reference| over the micro-batches' unpadded positions of `key`.<i>; a shape
// mismatch fails the test and returns infinity.
inline double worst_logits_diff(models::CausalLM& model, const ReferenceLogits& ref, const std::string& key) {
  torch::NoGradGuard ng;
  model.eval();
  auto file = st::File::open(ref.file.string());
  double worst = 0;
  for (size_t i = 0; i < ref.batches.size(); ++i) {
    auto ours = model.forward(ref.batches[i].input_ids, ref.batches[i].attention_mask);
    auto theirs = file->get(key + "." + std::to_string(i));
    EXPECT_EQ(ours.sizes(), theirs.sizes()) << key << " micro-batch " << i;
    if (ours.sizes() != theirs.sizes()) return INFINITY;
    worst = std::max(worst, max_diff(ours, theirs, ref.batches[i].attention_mask));
  }
  std::cout << key << ": max |ftrun - reference| = " << worst << "\n";
  return worst;
}

// KV-cached decoding of micro-batch `batch`'s first row against the reference's full-forward
// logits `key`.<batch>: a `prompt`-token prompt, then one token per step. Returns the max
// |difference| over every position.
inline double worst_cached_decoding_diff(models::CausalLM& model, const ReferenceLogits& ref, const std::string& key,
                                         size_t batch, int64_t prompt) {
  torch::NoGradGuard ng;
  auto ids = ref.batches[batch].input_ids.narrow(0, 0, 1);
  auto theirs = st::File::open(ref.file.string())->get(key + "." + std::to_string(batch)).narrow(0, 0, 1);
  models::KVCache cache;
  auto first = model.forward_cached(ids.narrow(1, 0, prompt), cache, {}, false);
  double worst = (first - theirs.narrow(1, 0, prompt)).abs().max().item<double>();
  for (int64_t t = prompt; t < ids.size(1); ++t) {
    auto step = model.forward_cached(ids.narrow(1, t, 1), cache, {}, true);
    worst = std::max(worst, (step - theirs.narrow(1, t, 1)).abs().max().item<double>());
  }
  std::cout << "cached decoding: max |ftrun - reference| = " << worst << "\n";
  return worst;
}

}  // namespace ftrun::testing
