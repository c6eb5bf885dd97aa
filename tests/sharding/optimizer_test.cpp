// The optimizer pieces of sharding/: AdamW against libtorch's own torch::optim::AdamW,
// global-norm clipping and HF's weight-decay rule.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sharding/optimizer.h"

using namespace ftrun;

TEST(Optimizer, AdamWMatchesLibtorchAdamW) {
  torch::manual_seed(0);
  auto a = torch::randn({5, 3}).requires_grad_(true);
  auto b = a.detach().clone().requires_grad_(true);
  sharding::AdamW ours({a}, {true}, {0.9, 0.999, 1e-8, 0.05});
  torch::optim::AdamW theirs({b}, torch::optim::AdamWOptions(3e-2).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.05));
  for (int step = 0; step < 6; ++step) {
    auto g = torch::randn({5, 3});
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    ours.step(3e-2);
    theirs.step();
  }
  EXPECT_TRUE(torch::allclose(a, b, 1e-6, 1e-7)) << (a - b).abs().max();
  EXPECT_FALSE(torch::allclose(a, b.detach() * 0 + 1));
}

// LoRA+'s per-tensor learning-rate scale is a torch param group of its own: libtorch's AdamW
// with two groups (lr and 4 * lr, the same weight decay, which torch multiplies by each
// group's lr) is the reference.
TEST(Optimizer, AdamWLrScaleMatchesLibtorchParamGroups) {
  torch::manual_seed(1);
  auto a = torch::randn({4, 3}).requires_grad_(true), b = torch::randn({6}).requires_grad_(true);
  auto a2 = a.detach().clone().requires_grad_(true), b2 = b.detach().clone().requires_grad_(true);
  sharding::AdamW ours({a, b}, {true, true}, {0.9, 0.999, 1e-8, 0.1}, {1.0, 4.0});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{a2}, std::make_unique<torch::optim::AdamWOptions>(
                                                       torch::optim::AdamWOptions(2e-2).weight_decay(0.1)));
  groups.emplace_back(std::vector<at::Tensor>{b2}, std::make_unique<torch::optim::AdamWOptions>(
                                                       torch::optim::AdamWOptions(8e-2).weight_decay(0.1)));
  torch::optim::AdamW theirs(std::move(groups), torch::optim::AdamWOptions(2e-2));
  auto b_start = b.detach().clone();
  for (int step = 0; step < 5; ++step) {
    auto ga = torch::randn({4, 3}), gb = torch::randn({6});
    a.mutable_grad() = ga.clone();
    a2.mutable_grad() = ga.clone();
    b.mutable_grad() = gb.clone();
    b2.mutable_grad() = gb.clone();
    ours.step(2e-2);
    theirs.step();
  }
  EXPECT_TRUE(torch::allclose(a, a2, 1e-6, 1e-7)) << (a - a2).abs().max();
  EXPECT_TRUE(torch::allclose(b, b2, 1e-6, 1e-7)) << (b - b2).abs().max();
  // 5 steps of at most ~lr each: the scaled tensor moved further than lr alone allows.
  EXPECT_GT((b - b_start).abs().max().item<double>(), 5 * 2e-2);
}

TEST(Optimizer, ClipGradNormScalesToMaxAndReportsPreClipNorm) {
  auto p = torch::zeros({2}).requires_grad_(true);
  auto q = torch::zeros({1}).requires_grad_(true);
  p.mutable_grad() = torch::tensor({3.0f, 0.0f});
  q.mutable_grad() = torch::tensor({4.0f});
  double n = sharding::clip_grad_norm({p, q}, 1.0);
  EXPECT_NEAR(n, 5.0, 1e-6);
  EXPECT_NEAR(p.grad()[0].item<double>(), 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(q.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);
  // Below the limit nothing changes.
  EXPECT_NEAR(sharding::clip_grad_norm({p, q}, 10.0), 1.0, 1e-5);
  EXPECT_NEAR(q.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_TRUE(sharding::decays("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_FALSE(sharding::decays("model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(sharding::decays("model.layers.0.self_attn.q_proj.bias"));
}

