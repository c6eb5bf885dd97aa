// The ZeRO engine in a world of one: every stage (and stage 3's recompute and keep-params
// modes) must give the trajectory of plain stage 0, since sharding may change where state
// lives but never the math. Multi-rank equality is in zero_dist_test.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "peft/strategy.h"
#include "runtime/trainer.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

std::shared_ptr<models::CausalLM> model(uint64_t seed) {
  return ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(37), seed});
}

std::vector<data::Batch> batches() {
  torch::manual_seed(99);
  std::vector<data::Batch> out;
  for (int i = 0; i < 4; ++i) {
    data::Batch b;
    b.input_ids = torch::randint(0, 37, {2, 9}, torch::kLong);
    b.attention_mask = torch::ones({2, 9}, torch::kLong);
    b.attention_mask[1].narrow(0, 6, 3).zero_();
    b.labels = b.input_ids.clone();
    b.labels.narrow(1, 0, 3).fill_(-100);
    b.labels.masked_fill_(b.attention_mask == 0, -100);
    b.num_label_tokens = (b.labels.narrow(1, 1, 8) != -100).sum().item<int64_t>();
    out.push_back(b);
  }
  return out;
}

struct Run {
  std::vector<runtime::StepStats> steps;
  std::vector<at::Tensor> final_weights;
  sharding::MemoryStats memory;
};

const nlohmann::json kLora = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4},
                               {"target_modules", {"q_proj", "v_proj", "down_proj", "lm_head"}}};
const nlohmann::json kPrefix = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}};

// ratio: LoRA+'s loraplus_lr_ratio (lora_B and 1-D tensors train at learning_rate * ratio).
Run train(int stage, bool keep, const nlohmann::json& peft_config, at::ScalarType dtype = at::kFloat,
          std::vector<sharding::ZeroEngine::OwnedState>* state = nullptr, double ratio = 0, int steps = 2,
          std::vector<sharding::ZeroEngine::UnitLayout>* layout = nullptr) {
  auto m = model(7);
  m->to(dtype);
  auto s = peft::make_strategy(peft_config);
  torch::manual_seed(3);
  s->apply(*m);
  if (!peft_config.is_null()) {
    torch::NoGradGuard ng;
    for (auto& kv : s->trainable()) kv.second.add_(torch::randn(kv.second.sizes()) * 0.05);
  }
  auto trainable = s->trainable();
  runtime::TrainingArgs args;
  args.learning_rate = 2e-2;
  args.weight_decay = 0.1;
  args.max_grad_norm = 0.3;
  args.loraplus_lr_ratio = ratio;
  runtime::Stepper st(*m, trainable, args, 4, nullptr, stage, keep);
  auto data = batches();
  Run r;
  if (layout) *layout = st.engine().layout();
  for (int k = 0; k < steps; ++k)
    r.steps.push_back(st.step({data[size_t(2 * k)], data[size_t(2 * k + 1)]}));
  st.engine().with_full_trainable([&] {
    for (const auto& kv : trainable) r.final_weights.push_back(kv.second.detach().clone());
  });
  r.memory = st.engine().memory();
  if (state) *state = st.engine().export_optimizer();
  // Evaluation (no grad) works under every stage and sees the trained weights.
  torch::NoGradGuard ng;
  auto logits = m->forward(data[0].input_ids, data[0].attention_mask);
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  return r;
}

void expect_same(const Run& a, const Run& b, const std::string& what) {
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t k = 0; k < a.steps.size(); ++k) {
    EXPECT_NEAR(a.steps[k].loss, b.steps[k].loss, 1e-6 * std::abs(a.steps[k].loss)) << what << " step " << k;
    EXPECT_NEAR(a.steps[k].grad_norm, b.steps[k].grad_norm, 1e-5 * a.steps[k].grad_norm) << what << " step " << k;
  }
  ASSERT_EQ(a.final_weights.size(), b.final_weights.size());
  for (size_t i = 0; i < a.final_weights.size(); ++i)
    EXPECT_TRUE(torch::allclose(a.final_weights[i], b.final_weights[i], 1e-5, 1e-6)) << what << " tensor " << i;
}

}  // namespace

TEST(Zero, EveryStageMatchesStageZeroInAWorldOfOneLora) {
  auto base = train(0, false, kLora);
  EXPECT_GT(base.steps[0].grad_norm, 0.3);  // clipping is exercised
  expect_same(base, train(1, false, kLora), "stage 1");
  expect_same(base, train(2, false, kLora), "stage 2");
  expect_same(base, train(3, false, kLora), "stage 3 recompute");
  expect_same(base, train(3, true, kLora), "stage 3 keep params");
}

TEST(Zero, EveryStageMatchesStageZeroInAWorldOfOnePrefixTuning) {
  // The prefix encoder sits outside the model's units (used inside every layer), so it
  // stays whole while the frozen base is sharded under stage 3.
  auto base = train(0, false, kPrefix);
  expect_same(base, train(2, false, kPrefix), "stage 2");
  expect_same(base, train(3, false, kPrefix), "stage 3 recompute");
  expect_same(base, train(3, true, kPrefix), "stage 3 keep params");
}

TEST(Zero, EveryStageMatchesStageZeroInAWorldOfOneFullParameters) {
  auto base = train(0, false, nullptr);
  expect_same(base, train(2, false, nullptr), "stage 2");
  expect_same(base, train(3, false, nullptr), "stage 3 recompute");
}

// DeepSpeed's bf16 mode (bf16 working weights, fp32 masters), with two micro-batches so the
// fp32 gradient accumulation is exercised: in a world of one every stage is the same math.
TEST(Zero, EveryStageMatchesStageZeroInAWorldOfOneBf16FullParameters) {
  std::vector<sharding::ZeroEngine::OwnedState> state;
  auto base = train(0, false, nullptr, at::kBFloat16, &state);
  for (const auto& w : base.final_weights) EXPECT_EQ(w.scalar_type(), at::kBFloat16);
  expect_same(base, train(1, false, nullptr, at::kBFloat16), "bf16 stage 1");
  expect_same(base, train(2, false, nullptr, at::kBFloat16), "bf16 stage 2");
  expect_same(base, train(3, false, nullptr, at::kBFloat16), "bf16 stage 3 recompute");
  expect_same(base, train(3, true, nullptr, at::kBFloat16), "bf16 stage 3 keep params");

  // The masters are fp32 and carry what bf16 cannot hold; the working weights are exactly
  // the masters rounded to bf16.
  int64_t numel = 0, finer = 0;
  for (const auto& w : base.final_weights) numel += w.numel();
  auto working = torch::cat([&] {
    std::vector<at::Tensor> flat;
    for (const auto& w : base.final_weights) flat.push_back(w.reshape({-1}));
    return flat;
  }());
  int64_t at_offset = 0;
  for (const auto& st : state) {
    ASSERT_TRUE(st.master.defined());
    ASSERT_EQ(st.master.scalar_type(), at::kFloat);
    auto w = working.narrow(0, at_offset, st.hi - st.lo);
    EXPECT_TRUE(torch::equal(st.master.to(at::kBFloat16), w)) << "unit " << st.unit;
    finer += (st.master != st.master.to(at::kBFloat16).to(at::kFloat)).sum().item<int64_t>();
    at_offset += st.hi - st.lo;
  }
  EXPECT_EQ(at_offset, numel);
  EXPECT_GT(finer, numel / 2);  // updates below bf16's resolution accumulate in the masters
  // Bytes: bf16 weights (2), fp32 grads (4), fp32 moments (8) + masters (4) per parameter.
  EXPECT_EQ(base.memory.param_bytes, uint64_t(numel) * 2);
  EXPECT_EQ(base.memory.optimizer_bytes, uint64_t(numel) * 12);
}

// LoRA+: the per-tensor learning-rate scale follows each tensor's segment of the flat shards
// at every stage, so every stage is still the trajectory of stage 0; and it changes that
// trajectory.
TEST(Zero, LoraPlusEveryStageMatchesStageZeroInAWorldOfOne) {
  auto base = train(0, false, kLora, at::kFloat, nullptr, 4.0);
  expect_same(base, train(1, false, kLora, at::kFloat, nullptr, 4.0), "LoRA+ stage 1");
  expect_same(base, train(2, false, kLora, at::kFloat, nullptr, 4.0), "LoRA+ stage 2");
  expect_same(base, train(3, false, kLora, at::kFloat, nullptr, 4.0), "LoRA+ stage 3 recompute");
  expect_same(base, train(3, true, kLora, at::kFloat, nullptr, 4.0), "LoRA+ stage 3 keep params");
  auto plain = train(0, false, kLora);
  EXPECT_GT(std::abs(plain.steps[1].loss - base.steps[1].loss), 1e-4 * plain.steps[1].loss);
}

// The scale in DeepSpeed's bf16 mode, where AdamW steps the fp32 masters: after one step from
// the same gradients, Adam's update (and the decoupled decay) is linear in the tensor's lr, so
// every master of a scaled tensor (here the 1-D norm weights, PEFT's groupB rule) moved exactly
// `ratio` times as far as without LoRA+, and every other master the same distance. Stages 0 and
// 3 (masters of the whole flat, and of a shard).
TEST(Zero, LoraPlusScalesTheBf16MastersUpdate) {
  for (int stage : {0, 3}) {
    std::vector<sharding::ZeroEngine::OwnedState> plain, scaled;
    std::vector<sharding::ZeroEngine::UnitLayout> layout;
    train(stage, false, nullptr, at::kBFloat16, &plain, 0, 1, &layout);
    train(stage, false, nullptr, at::kBFloat16, &scaled, 3.0, 1);
    auto start = model(7);
    start->to(at::kBFloat16);
    std::map<std::string, at::Tensor> w0;
    for (const auto& p : start->named_parameters()) w0[p.key()] = p.value().detach().to(at::kFloat).reshape({-1});
    ASSERT_EQ(plain.size(), layout.size());
    int64_t checked_scaled = 0, checked_plain = 0;
    for (size_t u = 0; u < layout.size(); ++u) {
      ASSERT_EQ(plain[u].lo, 0);  // a world of one owns the whole flat
      for (const auto& [name, offset, numel] : layout[u].params) {
        const bool one_d = start->named_parameters()[name].dim() == 1;
        auto d1 = plain[u].master.narrow(0, offset, numel) - w0.at(name);
        auto ds = scaled[u].master.narrow(0, offset, numel) - w0.at(name);
        auto want = one_d ? d1 * 3.0 : d1;
        EXPECT_TRUE(torch::allclose(ds, want, 1e-4, 1e-7)) << "stage " << stage << " " << name << " max diff "
                                                          << (ds - want).abs().max().item<double>();
        EXPECT_GT(d1.abs().max().item<double>(), 0) << name;
        (one_d ? checked_scaled : checked_plain) += numel;
      }
    }
    EXPECT_GT(checked_scaled, 0);
    EXPECT_GT(checked_plain, 0);
  }
}

TEST(Zero, MemoryAccountingPerStage) {
  auto s0 = train(0, false, nullptr).memory;
  auto s3 = train(3, false, nullptr).memory;
  // World of one: the same bytes, but stage 3 holds gathered units only transiently.
  EXPECT_EQ(s0.param_bytes, s3.param_bytes);
  EXPECT_EQ(s0.optimizer_bytes, s3.optimizer_bytes);
  EXPECT_EQ(s0.optimizer_bytes, 2 * s0.param_bytes);
  EXPECT_EQ(s0.peak_gathered_bytes, 0u);
  EXPECT_GT(s3.peak_gathered_bytes, 0u);
  EXPECT_LT(s3.peak_gathered_bytes, s3.param_bytes);  // never the whole model at once
}
