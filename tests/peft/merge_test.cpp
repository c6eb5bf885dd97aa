// `ftrun merge`'s core: folding a LoRA adapter into the base weights gives the same logits
// as base + adapter (fp32, 1e-5), for the Llama and ChatGLM families; the merged model
// round-trips through save_pretrained (sharded); prefix adapters are refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "models/model.h"
#include "peft/merge.h"
#include "peft/strategy.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

std::shared_ptr<models::CausalLM> tiny(const std::string& type, uint64_t seed) {
  auto m = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(40, {16, 24, 4, 2}, type), seed});
  // Non-zero biases (build_model zeroes them), so a merge that touched them would show.
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters())
    if (p.key().find(".bias") != std::string::npos) p.value().normal_(0, 0.1);
  return m;
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_merge_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

at::Tensor sample() { return torch::tensor({1, 5, 9, 2, 7, 33, 12}, torch::kLong).view({1, -1}); }

// Base + adapter (random non-zero B) logits, the adapter saved to dir.
at::Tensor adapted_logits(const std::string& type, const nlohmann::json& targets, const fs::path& dir,
                          bool rslora = false) {
  auto m = tiny(type, 3);
  nlohmann::json cfg = {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", 4}, {"lora_alpha", 16},
                        {"lora_dropout", 0.0}, {"target_modules", targets}, {"use_rslora", rslora}};
  auto s = peft::make_strategy(cfg);
  s->apply(*m);
  torch::NoGradGuard ng;
  torch::manual_seed(9);
  for (auto& kv : s->trainable()) kv.second.normal_(0, 0.3);
  s->save(dir.string(), "unused");
  m->eval();
  return m->forward(sample(), at::Tensor());
}

void check_merge(const std::string& type, const nlohmann::json& targets, bool rslora = false) {
  auto dir = temp_dir(type);
  auto expected = adapted_logits(type, targets, dir / "adapter", rslora);
  auto base = tiny(type, 3);
  torch::NoGradGuard ng;
  auto before = base->forward(sample(), at::Tensor());
  auto merged = peft::merge_lora(*base, (dir / "adapter").string());
  EXPECT_FALSE(merged.empty());
  // The model gained no adapter modules: its parameters are exactly its base ones.
  EXPECT_EQ(base->named_parameters().size(), base->base_parameter_names().size());
  auto got = base->forward(sample(), at::Tensor());
  EXPECT_GT((before - expected).abs().max().item<double>(), 1e-3) << "the adapter must change the output";
  EXPECT_LE((got - expected).abs().max().item<double>(), 1e-5);
  // Saved sharded (tiny shard limit: an index is written) and loaded back unchanged.
  models::save_pretrained(*base, (dir / "out").string(), 4096);
  EXPECT_TRUE(fs::exists(dir / "out" / "model.safetensors.index.json"));
  auto loaded = models::load_pretrained((dir / "out").string());
  EXPECT_LE((loaded->forward(sample(), at::Tensor()) - expected).abs().max().item<double>(), 1e-5);
  fs::remove_all(dir);
}

}  // namespace

TEST(LoraMerge, LlamaAllProjections) {
  check_merge("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
}

TEST(LoraMerge, Qwen2WithRsLora) { check_merge("qwen2", {"q_proj", "v_proj"}, /*rslora=*/true); }

TEST(LoraMerge, ChatGLMQueryKeyValueWithBias) {
  // The fused qkv projection carries a bias (add_qkv_bias); the merge must leave it alone.
  check_merge("glm4", {"query_key_value"});
}

TEST(LoraMerge, ChatGLM3AllLinears) {
  check_merge("chatglm3", {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"});
}

TEST(LoraMerge, PrefixAdapterIsRefused) {
  auto dir = temp_dir("prefix");
  auto m = tiny("llama", 4);
  auto s = peft::make_strategy({{"peft_type", "PREFIX_TUNING"}, {"task_type", "CAUSAL_LM"}, {"num_virtual_tokens", 3}});
  s->apply(*m);
  s->save((dir / "adapter").string(), "unused");
  auto base = tiny("llama", 4);
  try {
    peft::merge_lora(*base, (dir / "adapter").string());
    FAIL() << "a prefix adapter was merged";
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("only LoRA adapters can be merged"), std::string::npos) << msg;
    EXPECT_NE(msg.find("PREFIX_TUNING"), std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

TEST(LoraMerge, MismatchedAdapterIsRefused) {
  auto dir = temp_dir("mismatch");
  adapted_logits("llama", {"q_proj"}, dir / "adapter");
  // A model of other width: the shapes do not fit.
  auto other = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(40, {32, 24, 4, 2})});
  EXPECT_THROW(peft::merge_lora(*other, (dir / "adapter").string()), std::runtime_error);
  fs::remove_all(dir);
}
