// Holds ftrun to the REAL Hugging Face packages, not to a re-implementation: transformers'
// native classes load ftrun's embedded tiny models (examples/tiny, HF on-disk form) with
// AutoModelForCausalLM.from_pretrained and must give ftrun's logits to 1e-5 (fp32); an
// adapter that `ftrun` trains through its CLI must load in PEFT key for key and give, through
// PEFT, the logits ftrun's generate path gives. The packages (pinned in
// tests/reference/requirements.txt) live in the venv build/pyref, made by .ci/install-pyref;
// without it these tests fail, naming that command, and never pass or skip silently.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unistd.h>

#include "models/config.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "runtime/generate.h"
#include "tests/parity/reference_io.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

const std::string kPyref = ftrun::testing::pyref_python();
const std::string kHfRef = FTRUN_SOURCE_DIR "/tests/reference/hf_ref.py";
using ftrun::testing::require_pyref;
using ftrun::testing::run_logged;
using ftrun::testing::make_batches;
using ftrun::testing::max_diff;

fs::path scratch_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("ftrun_hf_parity_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

struct Reference {
  fs::path dir, data, logits;
  std::vector<data::Batch> batches;
};

// Writes the batches and has transformers (and PEFT, with an adapter) write its logits.
Reference run_reference(const fs::path& dir, const std::string& model_dir, const std::string& expect_class,
                        const std::string& adapter = "", const std::string& extra_args = "") {
  Reference ref{dir, dir / "data.json", dir / "hf_logits.safetensors", {}};
  auto cfg = models::load_model_config(model_dir);
  auto data = make_batches(cfg.vocab_size, cfg.pad_token_id >= 0 ? cfg.pad_token_id : 0);
  std::ofstream(ref.data) << data.dump();
  ref.batches = ftrun::testing::load_reference_batches(data);
  std::string cmd = kPyref + " " + kHfRef + " logits --model '" + model_dir + "' --data '" + ref.data.string() +
                    "' --out '" + ref.logits.string() + "' --expect-class " + expect_class;
  if (!adapter.empty()) cmd += " --adapter '" + adapter + "'";
  cmd += extra_args;
  run_logged(cmd, dir / "hf_ref.log");
  return ref;
}

void expect_logits(models::CausalLM& model, const Reference& ref, const std::string& key) {
  torch::NoGradGuard ng;
  model.eval();
  auto file = st::File::open(ref.logits.string());
  for (size_t i = 0; i < ref.batches.size(); ++i) {
    auto ours = model.forward(ref.batches[i].input_ids, ref.batches[i].attention_mask);
    auto theirs = file->get(key + "." + std::to_string(i));
    ASSERT_EQ(ours.sizes(), theirs.sizes()) << key << " micro-batch " << i;
    double diff = max_diff(ours, theirs, ref.batches[i].attention_mask);
    std::cout << key << " micro-batch " << i << ": max |ftrun - HF| = " << diff << "\n";
    EXPECT_LT(diff, 1e-5) << key << " micro-batch " << i;
  }
}

void check_base_model(const std::string& name, const std::string& model_dir, const std::string& expect_class) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  auto dir = scratch_dir(name);
  Reference ref;
  ASSERT_NO_FATAL_FAILURE(ref = run_reference(dir, model_dir, expect_class));
  auto model = models::load_pretrained(model_dir);
  expect_logits(*model, ref, "base");
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}

}  // namespace

TEST(HfParity, TinyLlamaLogitsEqualTransformers) {
  check_base_model("llama", FTRUN_SOURCE_DIR "/examples/tiny/model", "LlamaForCausalLM");
}

TEST(HfParity, TinyQwen2LogitsEqualTransformers) {
  check_base_model("qwen2", FTRUN_SOURCE_DIR "/examples/tiny/qwen2-model", "Qwen2ForCausalLM");
}

// configs/tiny/lora.yaml (r 8, all 7 projections) trained a few steps by the ftrun CLI; the
// adapter it writes is what users hand to PEFT.
TEST(HfParity, TinyLlamaLoraAdapterLoadsInPeftWithSameLogits) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  auto dir = scratch_dir("lora");
  const std::string model_dir = FTRUN_SOURCE_DIR "/examples/tiny/model";
  auto out = dir / "tiny-lora";
  ASSERT_NO_FATAL_FAILURE(run_logged(std::string("cd " FTRUN_SOURCE_DIR " && " FTRUN_BINARY_DIR "/ftrun configs/tiny/lora.yaml") +
                                         " --set training_args.output_dir='" + out.string() + "'" +
                                         " --set training_args.max_steps=6 --set training_args.save_steps=6" +
                                         " --set training_args.logging_steps=2",
                                     dir / "train.log"));
  Reference ref;
  ASSERT_NO_FATAL_FAILURE(ref = run_reference(dir, model_dir, "LlamaForCausalLM", out.string()));

  // ftrun's generate path: the adapter directory loaded as `ftrun generate` loads it.
  auto inference = runtime::load_for_inference(out.string(), model_dir);
  ASSERT_TRUE(inference.strategy) << "the output did not load as an adapter";
  expect_logits(*inference.model, ref, "adapter");
  expect_logits(*models::load_pretrained(model_dir), ref, "base");

  // Six steps must have moved the logits, or the comparison above proves nothing.
  auto file = st::File::open(ref.logits.string());
  for (size_t i = 0; i < ref.batches.size(); ++i) {
    double moved = max_diff(file->get("adapter." + std::to_string(i)), file->get("base." + std::to_string(i)),
                            ref.batches[i].attention_mask);
    EXPECT_GT(moved, 1e-3) << "micro-batch " << i << ": the trained adapter does not change PEFT's logits";
  }
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}

// DoRA (peft_config.use_dora), trained a few steps by the ftrun CLI with lora_dropout on
// (configs/tiny/lora.yaml's 7 projections): the adapter loads in PEFT key for key (its
// lora_magnitude_vector tensors included; hf_ref.py fails on a missing or unknown key) and
// PEFT builds DoRA layers from it; PEFT's logits equal ftrun's generate path; and `ftrun
// merge` gives the logits of PEFT's merge_and_unload().
TEST(HfParity, TinyLlamaDoraAdapterLoadsInPeftAndMergesAsPeft) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  auto dir = scratch_dir("dora");
  const std::string model_dir = FTRUN_SOURCE_DIR "/examples/tiny/model";
  auto out = dir / "tiny-dora";
  ASSERT_NO_FATAL_FAILURE(run_logged(std::string("cd " FTRUN_SOURCE_DIR " && " FTRUN_BINARY_DIR "/ftrun configs/tiny/lora.yaml") +
                                         " --set training_args.output_dir='" + out.string() + "'" +
                                         " --set training_args.max_steps=6 --set training_args.save_steps=6" +
                                         " --set training_args.logging_steps=2 --set peft_config.use_dora=true" +
                                         " --set peft_config.lora_dropout=0.1",
                                     dir / "train.log"));
  Reference ref;
  ASSERT_NO_FATAL_FAILURE(ref = run_reference(dir, model_dir, "LlamaForCausalLM", out.string(), " --merge"));
  nlohmann::json summary;
  {
    std::ifstream log(dir / "hf_ref.log");
    std::string line, last;
    while (std::getline(log, line))
      if (!line.empty() && line[0] == '{') last = line;
    summary = nlohmann::json::parse(last);
  }
  EXPECT_EQ(summary.value("use_dora", false), true) << summary.dump();
  EXPECT_EQ(summary.value("adapter_keys", 0), 3 * 7 * 2) << summary.dump();

  auto inference = runtime::load_for_inference(out.string(), model_dir);
  ASSERT_TRUE(inference.strategy) << "the output did not load as an adapter";
  expect_logits(*inference.model, ref, "adapter");

  // ftrun merge, then the merged HF model as ftrun loads it, against merge_and_unload.
  ASSERT_NO_FATAL_FAILURE(run_logged(std::string(FTRUN_BINARY_DIR "/ftrun merge '") + out.string() + "' '" +
                                         (dir / "merged").string() + "' --base '" + model_dir + "'",
                                     dir / "merge.log"));
  auto merged = models::load_pretrained((dir / "merged").string());
  expect_logits(*merged, ref, "merged");

  // The adapter must have moved the logits, or the comparisons above prove nothing.
  auto file = st::File::open(ref.logits.string());
  for (size_t i = 0; i < ref.batches.size(); ++i) {
    double moved = max_diff(file->get("adapter." + std::to_string(i)), file->get("base." + std::to_string(i)),
                            ref.batches[i].attention_mask);
    EXPECT_GT(moved, 1e-3) << "micro-batch " << i << ": the trained adapter does not change PEFT's logits";
  }
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);
}
