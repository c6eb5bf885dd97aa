// attn_implementation (issue 14): scaled_dot_product_attention against the families' eager
// attention (the path held to transformers elsewhere), on every family's tiny model, for each
// kind of mask the families build: none (the plain causal call, FlashAttention's case on a
// GPU), right padding, packed rows, P-Tuning prefix slots, Mistral's window and KV-cached
// decoding; logits and gradients within 1e-5 (fp32), and bf16 within bf16's rounding.
// On Debian's libtorch 1.13 (no SDPA) the kernel choice falls back to eager and asking for
// sdpa fails with a clear message; the numerical cases run in the libtorch 2.x flavour
// (.ci/build-cuda runs this test there, on the CPU).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "models/attention.h"
#include "models/config.h"
#include "testing/errors.h"
#include "models/model.h"
#include "peft/strategy.h"
#include "testing/tiny.h"

using namespace ftrun;
using models::AttentionKernel;

namespace {

constexpr int64_t kVocab = 64;

using ftrun::testing::error_of;

TEST(Attention, KernelChoice) {
  EXPECT_EQ(models::resolve_attention_kernel("eager"), AttentionKernel::kEager);
  EXPECT_NE(error_of([] { models::resolve_attention_kernel("flash_attention_2"); }).find("sdpa uses FlashAttention"),
            std::string::npos);
  EXPECT_NE(error_of([] { models::resolve_attention_kernel("fast"); }).find("expected auto, eager or sdpa"),
            std::string::npos);
  auto model = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(kVocab), 1});
  if (models::sdpa_available()) {
    EXPECT_EQ(models::resolve_attention_kernel("auto"), AttentionKernel::kSdpa);
    EXPECT_EQ(models::resolve_attention_kernel("sdpa"), AttentionKernel::kSdpa);
    EXPECT_EQ(model->attention_kernel(), AttentionKernel::kSdpa);  // what auto means
  } else {
    EXPECT_EQ(models::resolve_attention_kernel("auto"), AttentionKernel::kEager);
    EXPECT_NE(error_of([] { models::resolve_attention_kernel("sdpa"); }).find("sdpa needs a build against libtorch >= 2.0"),
              std::string::npos);
    EXPECT_EQ(model->attention_kernel(), AttentionKernel::kEager);
    auto q = torch::zeros({1, 1, 2, 4});
    EXPECT_NE(error_of([&] { models::sdpa_attention(q, q, q, {}); }).find("needs libtorch >= 2.0"), std::string::npos);
  }
}

// A family's tiny model with sharp random weights (norms kept), Mistral with a 5-slot window.
std::shared_ptr<models::CausalLM> build(const std::string& family) {
  auto spec = ftrun::testing::tiny_spec(kVocab, {32, 48, 4, 2}, family);
  auto cfg = ftrun::testing::tiny_model_config(spec);
  if (family == "mistral") cfg.sliding_window = 5;
  torch::manual_seed(11);
  auto model = models::build_model(cfg);
  torch::NoGradGuard ng;
  for (auto& p : model->named_parameters())
    if (p.key().find("norm") == std::string::npos) p.value().normal_(0, 0.2);
  return model;
}

struct Run {
  at::Tensor logits;
  std::map<std::string, at::Tensor> grads;
};

// Logits, and the gradients of the loss sum over every trainable parameter.
Run run(models::CausalLM& m, AttentionKernel k, const at::Tensor& ids, const at::Tensor& mask) {
  m.set_attention_kernel(k);
  m.zero_grad();
  Run r;
  auto labels = mask.defined() ? ids.masked_fill(mask == 0, -100) : ids;
  m.forward_loss(ids, mask, labels).backward();
  for (auto& p : m.named_parameters())
    if (p.value().grad().defined()) r.grads[p.key()] = p.value().grad().clone();
  torch::NoGradGuard ng;
  r.logits = m.forward(ids, mask);
  return r;
}

void expect_close(const Run& sdpa, const Run& eager, const at::Tensor& keep, double tol, const std::string& what) {
  auto valid = keep.to(torch::kBool).unsqueeze(-1).expand_as(eager.logits);
  auto diff = (sdpa.logits - eager.logits).abs().masked_select(valid).max().item<double>();
  EXPECT_LE(diff, tol * std::max(1.0, eager.logits.abs().max().item<double>())) << what << ": logits";
  ASSERT_EQ(sdpa.grads.size(), eager.grads.size()) << what;
  ASSERT_FALSE(eager.grads.empty()) << what;
  for (const auto& [name, g] : eager.grads) {
    auto scale = std::max(1e-3, g.abs().max().item<double>());
    EXPECT_LE((sdpa.grads.at(name) - g).abs().max().item<double>(), tol * scale) << what << ": grad " << name;
  }
}

class SdpaEqualsEager : public ::testing::TestWithParam<std::string> {};

TEST_P(SdpaEqualsEager, EveryMaskKind) {
  const std::string family = GetParam();
  if (!models::sdpa_available()) {
    // Nothing to compare on this build: the fallback is asserted instead.
    EXPECT_EQ(build(family)->attention_kernel(), AttentionKernel::kEager);
    return;
  }
  auto model = build(family);
  torch::manual_seed(5);
  auto ids = torch::randint(1, kVocab, {2, 12}, torch::kLong);
  auto ones = torch::ones({2, 12}, torch::kLong);
  auto padded = ones.clone();
  padded[1].narrow(0, 8, 4).fill_(0);
  // Packed rows: samples 1 (5 tokens), 2 (4) and 3 (3) in row 0; row 1 two samples and padding.
  auto packed = torch::tensor({{1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3}, {1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0}}, torch::kLong);
  const std::vector<std::pair<std::string, at::Tensor>> masks = {
      {"no padding", ones}, {"no mask", at::Tensor()}, {"right padding", padded}, {"packed", packed}};
  for (const auto& [what, mask] : masks) {
    auto keep = mask.defined() ? (mask != 0) : ones.to(torch::kBool);
    expect_close(run(*model, AttentionKernel::kSdpa, ids, mask), run(*model, AttentionKernel::kEager, ids, mask), keep,
                 1e-5, family + " " + what);
  }

  // KV-cached decoding: a 7-token prompt then one token at a time, against eager's full forward.
  {
    torch::NoGradGuard ng;
    model->set_attention_kernel(AttentionKernel::kEager);
    auto full = model->forward(ids, {});
    model->set_attention_kernel(AttentionKernel::kSdpa);
    models::KVCache cache;
    auto first = model->forward_cached(ids.narrow(1, 0, 7), cache, {}, false);
    double worst = (first - full.narrow(1, 0, 7)).abs().max().item<double>();
    for (int64_t t = 7; t < 12; ++t)
      worst = std::max(worst, (model->forward_cached(ids.narrow(1, t, 1), cache, {}, true) - full.narrow(1, t, 1))
                                  .abs().max().item<double>());
    EXPECT_LE(worst, 1e-5 * std::max(1.0, full.abs().max().item<double>())) << family << " cached decoding";
  }

  // P-Tuning v2 prefix slots (visible to every position: an explicit mask).
  {
    auto m = build(family);
    auto s = peft::make_strategy(nlohmann::json{{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}});
    s->apply(*m);
    {
      torch::NoGradGuard ng;
      torch::manual_seed(2);
      for (auto& kv : s->trainable()) kv.second.normal_(0, 0.5);
    }
    expect_close(run(*m, AttentionKernel::kSdpa, ids, padded), run(*m, AttentionKernel::kEager, ids, padded), padded,
                 1e-5, family + " prefix");
  }

  // bf16 weights: the two kernels round differently; within bf16's few ulps of the logits.
  model->to(torch::kBFloat16);
  torch::NoGradGuard ng;
  model->set_attention_kernel(AttentionKernel::kEager);
  auto eager = model->forward(ids, padded);
  model->set_attention_kernel(AttentionKernel::kSdpa);
  auto sdpa = model->forward(ids, padded);
  auto keep = (padded != 0).unsqueeze(-1).expand_as(eager);
  EXPECT_LE((sdpa - eager).abs().masked_select(keep).max().item<double>(), 0.05 * std::max(1.0, eager.abs().max().item<double>()))
      << family << " bf16";
}

INSTANTIATE_TEST_SUITE_P(Families, SdpaEqualsEager,
                         ::testing::Values("llama", "qwen2", "mistral", "chatglm3", "glm4", "glm", "glm4-0414"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
