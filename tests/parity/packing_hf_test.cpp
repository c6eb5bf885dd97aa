// Packing (issue 18) against the REAL transformers, not against ftrun's own unpacked path
// (tests/models/packing_model_test.cpp does that): a packed batch as data::collate_packed
// writes it goes through ftrun and through transformers' native LlamaForCausalLM /
// Qwen2ForCausalLM (eager attention), to which tests/reference/hf_ref.py `packed` hands a 4D
// float mask [B, 1, T, T] that it builds from the packed attention_mask alone (block-diagonal
// causal: a token sees the earlier tokens of its own sample) and position_ids restarting at 0
// per sample. Logits at every non-padding position must agree to 1e-5 (fp32) and the loss sum
// over the label tokens (HF's ForCausalLMLoss shift, the collator's -100 at each sample's first
// token) to 1e-5 relative, for the base models and through PEFT with a LoRA adapter that ftrun
// wrote. The same HF call with a plain causal mask must differ, so the comparison can fail.
// GLM-4 / ChatGLM3 have no native class in transformers 4.49 (only trust_remote_code), so they
// are not covered here. The venv build/pyref (.ci/install-pyref) is required.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "data/packing.h"
#include "models/config.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "peft/strategy.h"
#include "tests/parity/reference_io.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

const std::string kPyref = ftrun::testing::pyref_python();
const std::string kHfRef = FTRUN_SOURCE_DIR "/tests/reference/hf_ref.py";
using ftrun::testing::require_pyref;
using ftrun::testing::run_logged;

fs::path scratch_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("ftrun_packing_hf_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Random samples over the whole vocabulary; the first third of each carries no loss, as a
// chat template masks the prompt.
std::vector<data::Sample> make_samples(int64_t vocab, const std::vector<int64_t>& lengths) {
  torch::manual_seed(17);
  std::vector<data::Sample> out;
  for (int64_t n : lengths) {
    auto ids = torch::randint(vocab, {n}, torch::kLong);
    data::Sample s;
    s.input_ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + n);
    s.labels = s.input_ids;
    for (int64_t t = 0; t < n / 3; ++t) s.labels[size_t(t)] = -100;
    out.push_back(s);
  }
  return out;
}

nlohmann::json rows_json(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t r = 0; r < t.size(0); ++r) {
    auto row = t[r].contiguous();
    out.push_back(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()));
  }
  return out;
}

// Two packed micro-batches: rows of 3 + 2 + 1 samples (the shorter rows right-padded), and a
// single row of 4 samples that fills it (no padding).
std::vector<data::Batch> make_packed_batches(int64_t vocab, int64_t pad_id) {
  // collate_packed copies the samples into the batch's tensors.
  const auto samples = make_samples(vocab, {9, 6, 12, 5, 7, 10, 4, 8, 6, 5});
  const std::vector<std::vector<std::vector<int64_t>>> plans = {{{0, 1, 3}, {2, 4}, {5}}, {{6, 7, 8, 9}}};
  std::vector<data::Batch> out;
  for (const auto& plan : plans) {
    std::vector<std::vector<const data::Sample*>> rows;
    for (const auto& r : plan) {
      rows.emplace_back();
      for (int64_t i : r) rows.back().push_back(&samples[size_t(i)]);
    }
    out.push_back(data::collate_packed(rows, pad_id));
  }
  return out;
}

// Max |a - b| over the non-padding positions (packed mask != 0).
double max_diff(const at::Tensor& a, const at::Tensor& b, const at::Tensor& mask) {
  auto valid = (mask != 0).unsqueeze(-1).expand_as(a);
  return (a - b).abs().masked_select(valid).max().item<double>();
}

double rel_diff(double a, double b) { return std::abs(a - b) / std::max(1e-12, std::abs(b)); }

void check_packed(const std::string& name, const std::string& model_dir, const std::string& expect_class,
                  bool with_lora) {
  SCOPED_TRACE(name);
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  auto dir = scratch_dir(name);
  auto cfg = models::load_model_config(model_dir);
  auto batches = make_packed_batches(cfg.vocab_size, cfg.pad_token_id >= 0 ? cfg.pad_token_id : 0);
  nlohmann::json data = {{"batches", nlohmann::json::array()}};
  for (const auto& b : batches) {
    ASSERT_TRUE(models::is_packed_mask(b.attention_mask));
    data["batches"].push_back({{"input_ids", rows_json(b.input_ids)},
                               {"attention_mask", rows_json(b.attention_mask)},
                               {"labels", rows_json(b.labels)}});
  }
  std::ofstream(dir / "data.json") << data.dump();

  auto model = models::load_pretrained(model_dir);
  std::string prefix = "base";
  std::string extra;
  if (with_lora) {
    // A LoRA adapter on all 7 projections with random non-zero A and B (B starts at 0, which
    // would make the adapter a no-op), saved by ftrun in PEFT's format for PEFT to load.
    auto strategy = peft::make_strategy(nlohmann::json{
        {"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0},
        {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}});
    strategy->apply(*model);
    {
      torch::NoGradGuard ng;
      torch::manual_seed(3);
      for (auto& kv : strategy->trainable()) kv.second.copy_(torch::randn(kv.second.sizes()) * 0.05);
    }
    strategy->save((dir / "adapter").string(), model_dir);
    prefix = "adapter";
    extra = " --adapter '" + (dir / "adapter").string() + "'";
  }
  const auto out = dir / "hf_packed.safetensors";
  ASSERT_NO_FATAL_FAILURE(run_logged(kPyref + " " + kHfRef + " packed --model '" + model_dir + "' --data '" +
                                         (dir / "data.json").string() + "' --out '" + out.string() +
                                         "' --expect-class " + expect_class + extra,
                                     dir / "hf_ref.log"));
  auto file = st::File::open(out.string());

  torch::NoGradGuard ng;
  model->eval();
  for (size_t i = 0; i < batches.size(); ++i) {
    const auto& b = batches[i];
    const std::string idx = "." + std::to_string(i);
    auto ours = model->forward(b.input_ids, b.attention_mask);
    int64_t count = -1;
    const double our_loss = model->forward_loss(b.input_ids, b.attention_mask, b.labels, &count).item<double>();
    EXPECT_EQ(count, b.num_label_tokens);

    auto theirs = file->get(prefix + ".packed" + idx);
    ASSERT_EQ(ours.sizes(), theirs.sizes()) << "micro-batch " << i;
    const double their_loss = file->get(prefix + ".packed_loss" + idx).item<double>();
    const double d = max_diff(ours, theirs, b.attention_mask);
    const double dl = rel_diff(our_loss, their_loss);
    std::cout << name << " micro-batch " << i << ": max |ftrun - HF| logits = " << d << ", loss sum ftrun "
              << our_loss << " HF " << their_loss << " (rel " << dl << ")\n";
    EXPECT_LT(d, 1e-5) << "micro-batch " << i;
    EXPECT_LT(dl, 1e-5) << "micro-batch " << i;

    // The test can fail: HF with a plain causal mask (later samples see the earlier ones), with
    // or without restarting positions, is not ftrun's packed result.
    for (const char* variant : {"no_block", "concat"}) {
      const double dv = max_diff(ours, file->get(prefix + "." + variant + idx), b.attention_mask);
      const double dlv = rel_diff(our_loss, file->get(prefix + "." + variant + "_loss" + idx).item<double>());
      std::cout << name << " micro-batch " << i << ": HF " << variant << " differs by " << dv << " (loss rel " << dlv
                << ")\n";
      EXPECT_GT(dv, 1e-3) << variant << " micro-batch " << i;
      EXPECT_GT(dlv, 1e-5) << variant << " micro-batch " << i;
    }
    // Under the block-diagonal mask, positions that run on through the row instead of
    // restarting shift every sample's positions by a constant; RoPE scores depend only on
    // position differences, so HF gives the same logits up to rounding. Restarting cannot be
    // told apart here (packing_model_test checks the positions themselves); this pins that
    // fact, and that the two HF position inputs differ only where attention crosses samples.
    const double dr = max_diff(ours, file->get(prefix + ".no_restart" + idx), b.attention_mask);
    std::cout << name << " micro-batch " << i << ": HF no_restart differs by " << dr << "\n";
    EXPECT_LT(dr, 1e-4) << "micro-batch " << i;
    EXPECT_GT(max_diff(file->get(prefix + ".no_block" + idx), file->get(prefix + ".concat" + idx), b.attention_mask),
              1e-3)
        << "HF ignored position_ids, micro-batch " << i;
  }
  if (with_lora) {
    // The adapter must move PEFT's logits, or the adapter comparison proves nothing.
    for (size_t i = 0; i < batches.size(); ++i) {
      const std::string idx = "." + std::to_string(i);
      EXPECT_GT(max_diff(file->get("adapter.packed" + idx), file->get("base.packed" + idx), batches[i].attention_mask),
                1e-3)
          << "the adapter does not change PEFT's logits, micro-batch " << i;
    }
  }
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}

}  // namespace

TEST(PackingHf, TinyLlamaPackedEqualsTransformers) {
  check_packed("llama", FTRUN_SOURCE_DIR "/examples/tiny/model", "LlamaForCausalLM", false);
}

TEST(PackingHf, TinyQwen2PackedEqualsTransformers) {
  check_packed("qwen2", FTRUN_SOURCE_DIR "/examples/tiny/qwen2-model", "Qwen2ForCausalLM", false);
}

TEST(PackingHf, TinyLlamaLoraPackedEqualsPeft) {
  check_packed("llama_lora", FTRUN_SOURCE_DIR "/examples/tiny/model", "LlamaForCausalLM", true);
}

TEST(PackingHf, TinyQwen2LoraPackedEqualsPeft) {
  check_packed("qwen2_lora", FTRUN_SOURCE_DIR "/examples/tiny/qwen2-model", "Qwen2ForCausalLM", true);
}
