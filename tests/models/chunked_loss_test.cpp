// The LM head + cross-entropy in chunks of tokens (models/chunked_loss.h) and forward_loss:
// - the op equals logits = hidden @ W^T, cross_entropy(sum) in loss and in the gradients of
//   hidden and weight (fp32, 1e-6 relative), for chunk sizes that do not divide N, -100
//   targets, no counted rows at all, a frozen weight, an incoming gradient other than 1;
// - its peak extra allocation (counted by a CPU allocator wrapped around libtorch's) stays
//   far under the whole micro-batch's fp32 logits (V = 50,000, N = 4,096: 819 MB), while the
//   same op with one chunk of all N tokens does reach that size (so the check can fail);
// - forward_loss equals causal_lm_loss_sum(forward()) in loss, count and every parameter's
//   gradient (1e-6) for Llama (untied and tied), Qwen2, GLM-4 and ChatGLM3, with LoRA on the
//   head too; forward_cached(last_only) is the last row of the full result;
// - bf16 inputs and CPU autocast: gradients come back in the inputs' dtypes, loss near fp32.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>

#include "models/chunked_loss.h"
#include "models/model.h"
#include "peft/strategy.h"
#include "testing/alloc_counter.h"
#include "testing/tiny.h"
#include "models/torch_compat.h"

using namespace ftrun;

namespace {

namespace F = torch::nn::functional;

at::Tensor reference_loss(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets) {
  auto logits = torch::mm(hidden, weight.t());
  return F::cross_entropy(logits, targets, F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

// max |a - b| <= tol * max |b| (relative to the tensor's scale: elements near zero after
// cancellation carry only absolute rounding).
void expect_close(const at::Tensor& a, const at::Tensor& b, double tol, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  if (b.numel() == 0) return;
  double scale = b.abs().max().item<double>();
  double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(diff, tol * scale) << what << ": max diff " << diff << " at scale " << scale;
}

struct Case {
  int64_t N, V, H;
  std::vector<int64_t> chunks;
};

}  // namespace

TEST(ChunkedLoss, EqualsUnchunkedLossAndGradients) {
  torch::manual_seed(5);
  for (const Case& c : {Case{37, 50, 16, {1, 7, 16, 37, 1000}}, Case{100, 301, 24, {13, 64}},
                        Case{1, 20, 8, {3}}, Case{0, 20, 8, {4}}}) {
    auto hidden0 = torch::randn({c.N, c.H}) * 2;
    auto weight0 = torch::randn({c.V, c.H}) * 0.5;
    auto targets = torch::randint(0, c.V, {c.N}, torch::kLong);
    if (c.N > 3) targets.narrow(0, 0, 3).fill_(-100);  // ignored rows, as prompt tokens are
    if (c.N > 10) targets[c.N - 2] = -100;
    // The reference, and an incoming gradient of 1/13 (the trainer divides by the count).
    auto h_ref = hidden0.clone().requires_grad_(true), w_ref = weight0.clone().requires_grad_(true);
    auto ref = reference_loss(h_ref, w_ref, targets);
    (ref / 13.0).backward();
    for (int64_t chunk : c.chunks) {
      SCOPED_TRACE("N=" + std::to_string(c.N) + " V=" + std::to_string(c.V) + " chunk=" + std::to_string(chunk));
      auto h = hidden0.clone().requires_grad_(true), w = weight0.clone().requires_grad_(true);
      auto loss = models::chunked_linear_cross_entropy(h, w, targets, chunk);
      EXPECT_EQ(loss.scalar_type(), at::kFloat);
      EXPECT_EQ(loss.dim(), 0);
      EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-6 * std::abs(ref.item<double>()));
      (loss / 13.0).backward();
      expect_close(h.grad(), h_ref.grad(), 1e-6, "grad hidden");
      expect_close(w.grad(), w_ref.grad(), 1e-6, "grad weight");
      if (c.N == 0) {
        EXPECT_EQ(loss.item<double>(), 0.0);
        EXPECT_EQ(w.grad().abs().max().item<double>(), 0.0);  // present (zero), as autograd gives
      }
      // Without grad mode only the loss is computed: the same value.
      torch::NoGradGuard ng;
      EXPECT_EQ(models::chunked_linear_cross_entropy(hidden0, weight0, targets, chunk).item<double>(),
                loss.item<double>());
    }
  }
}

TEST(ChunkedLoss, FrozenWeightGivesOnlyTheHiddenGradient) {
  torch::manual_seed(6);
  auto hidden0 = torch::randn({29, 12});
  auto weight = torch::randn({40, 12});
  auto targets = torch::randint(0, 40, {29}, torch::kLong);
  auto h_ref = hidden0.clone().requires_grad_(true);
  reference_loss(h_ref, weight, targets).backward();
  auto h = hidden0.clone().requires_grad_(true);
  models::chunked_linear_cross_entropy(h, weight, targets, 8).backward();
  expect_close(h.grad(), h_ref.grad(), 1e-6, "grad hidden");
  EXPECT_FALSE(weight.grad().defined());
}

TEST(ChunkedLoss, RejectsTargetsOutsideTheVocabulary) {
  auto h = torch::randn({4, 8}), w = torch::randn({10, 8});
  EXPECT_THROW(models::chunked_linear_cross_entropy(h, w, torch::tensor({1, 2, 10, -100}, torch::kLong)),
               c10::Error);
  EXPECT_THROW(models::chunked_linear_cross_entropy(h, w, torch::tensor({1, -3, 0, 0}, torch::kLong)), c10::Error);
  EXPECT_THROW(models::chunked_linear_cross_entropy(h, torch::randn({10, 7}), torch::tensor({1, 2, 3, 4}, torch::kLong)),
               c10::Error);
}

TEST(ChunkedLoss, DefaultChunkKeepsOneChunkOfLogitsNear256MiB) {
  EXPECT_EQ(models::default_loss_chunk_tokens(151552), 442);
  EXPECT_EQ(models::default_loss_chunk_tokens(32000), 2097);
  EXPECT_EQ(models::default_loss_chunk_tokens(50), 4096);
  EXPECT_EQ(models::default_loss_chunk_tokens(10'000'000), 16);
}

using ftrun::testing::peak_extra_bytes;

TEST(ChunkedLoss, PeakMemoryStaysFarUnderTheFullLogits) {
  const int64_t N = 4096, V = 50000, H = 32, chunk = 256;
  const int64_t full_logits = N * V * 4;  // 819 MB: what forward() + cross_entropy would hold
  torch::manual_seed(7);
  auto hidden = (torch::randn({N, H}) * 0.5).requires_grad_(true);
  auto weight = (torch::randn({V, H}) * 0.5).requires_grad_(true);
  auto targets = torch::randint(0, V, {N}, torch::kLong);
  double loss_value = 0;
  int64_t chunked = peak_extra_bytes([&] {
    auto loss = models::chunked_linear_cross_entropy(hidden, weight, targets, chunk);
    loss.backward();
    loss_value = loss.item<double>();
  });
  EXPECT_TRUE(std::isfinite(loss_value));
  ASSERT_TRUE(weight.grad().defined() && hidden.grad().defined());
  // A couple of chunks' logits plus the two gradients, nothing of the size N x V.
  const int64_t chunk_logits = chunk * V * 4, grads = (V + N) * H * 4;
  EXPECT_LT(chunked, 3 * chunk_logits + grads) << "chunked peak " << chunked << " bytes";
  EXPECT_LT(chunked, full_logits / 4) << "chunked peak " << chunked << " bytes";
  // The counter sees a whole-batch chunk: the same op with chunk = N holds the full logits.
  torch::NoGradGuard ng;
  int64_t whole = peak_extra_bytes([&] { models::chunked_linear_cross_entropy(hidden, weight, targets, N); });
  EXPECT_GE(whole, full_logits) << "one chunk of all tokens peaked at " << whole << " bytes";
  std::cout << "peak extra bytes: chunks of " << chunk << " with gradients " << chunked << ", one chunk of " << N
            << " without " << whole << " (full logits " << full_logits << ")\n";
}

TEST(ChunkedLoss, Bf16InputsAndAutocast) {
  torch::manual_seed(8);
  auto hidden0 = torch::randn({50, 32});
  auto weight0 = torch::randn({70, 32}) * 0.3;
  auto targets = torch::randint(0, 70, {50}, torch::kLong);
  targets[0] = -100;
  auto ref = reference_loss(hidden0, weight0, targets).item<double>();
  // bf16-held inputs: matmuls in bf16, gradients in bf16.
  auto h = hidden0.to(at::kBFloat16).requires_grad_(true), w = weight0.to(at::kBFloat16).requires_grad_(true);
  auto loss = models::chunked_linear_cross_entropy(h, w, targets, 16);
  EXPECT_EQ(loss.scalar_type(), at::kFloat);
  EXPECT_NEAR(loss.item<double>(), ref, 2e-2 * std::abs(ref));
  loss.backward();
  EXPECT_EQ(h.grad().scalar_type(), at::kBFloat16);
  EXPECT_EQ(w.grad().scalar_type(), at::kBFloat16);
  // fp32 inputs under CPU autocast: bf16 matmuls, fp32 gradients (through autograd's cast).
  auto h32 = hidden0.clone().requires_grad_(true), w32 = weight0.clone().requires_grad_(true);
  at::Tensor auto_loss;
  {
    compat::set_autocast(at::kCPU, true, at::kBFloat16);
    auto_loss = models::chunked_linear_cross_entropy(h32, w32, targets, 16);
    compat::set_autocast(at::kCPU, false, at::kBFloat16);
    at::autocast::clear_cache();
  }
  EXPECT_NEAR(auto_loss.item<double>(), ref, 2e-2 * std::abs(ref));
  EXPECT_NE(auto_loss.item<double>(), ref);  // it did run in bf16
  auto_loss.backward();
  EXPECT_EQ(h32.grad().scalar_type(), at::kFloat);
  EXPECT_EQ(w32.grad().scalar_type(), at::kFloat);
  expect_close(w32.grad(), w.grad().to(at::kFloat), 5e-2, "autocast vs bf16 grad weight");
}

namespace {

struct ModelCase {
  std::string type;
  bool tie;
  bool lora_head;
};

void check_forward_loss(const ModelCase& mc) {
  SCOPED_TRACE(mc.type + (mc.tie ? " tied" : "") + (mc.lora_head ? " lora on the head" : ""));
  auto spec = ftrun::testing::tiny_spec(61, {32, 48, 4, 2}, mc.type);
  spec.tie_word_embeddings = mc.tie;
  auto model = ftrun::testing::make_tiny_model({spec, 11, /*weight_std=*/0.2});
  std::unique_ptr<peft::Strategy> strategy;
  if (mc.lora_head) {
    bool glm = mc.type == "glm4" || mc.type == "chatglm3";
    strategy = peft::make_strategy(nlohmann::json{
        {"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4},
        {"target_modules", glm ? nlohmann::json{"query_key_value", "output_layer"}
                               : nlohmann::json{"q_proj", "lm_head"}}});
    strategy->apply(*model);
    torch::NoGradGuard ng;
    for (auto& kv : strategy->trainable()) kv.second.add_(torch::randn(kv.second.sizes()) * 0.1);
  }
  model->set_loss_chunk_tokens(4);  // does not divide the 9 labelled positions
  torch::manual_seed(12);
  const int64_t B = 2, T = 9;
  auto ids = torch::randint(0, 61, {B, T}, torch::kLong);
  auto mask = torch::ones({B, T}, torch::kLong);
  mask[1].narrow(0, 6, 3).zero_();
  auto labels = ids.clone();
  labels.narrow(1, 0, 3).fill_(-100);
  labels.masked_fill_(mask == 0, -100);
  auto grads = [&model] {
    std::map<std::string, at::Tensor> out;
    for (auto& p : model->named_parameters())
      if (p.value().grad().defined()) {
        out[p.key()] = p.value().grad().clone();
        p.value().mutable_grad() = at::Tensor();
      }
    return out;
  };
  int64_t ref_count = -1, count = -1;
  auto ref = models::causal_lm_loss_sum(model->forward(ids, mask), labels, &ref_count);
  (ref / 7.0).backward();
  auto ref_grads = grads();
  auto loss = model->forward_loss(ids, mask, labels, &count);
  (loss / 7.0).backward();
  auto got = grads();
  EXPECT_EQ(count, ref_count);
  EXPECT_EQ(count, 9);  // 6 + 3: positions 3..8 of row 0, 3..5 of the padded row 1
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-6 * std::abs(ref.item<double>()));
  ASSERT_EQ(got.size(), ref_grads.size());
  EXPECT_GE(got.size(), mc.lora_head ? 6u : 13u);  // LoRA: 2 layers x q (A, B) + the head's A, B
  for (const auto& kv : ref_grads) {
    ASSERT_TRUE(got.count(kv.first)) << kv.first;
    expect_close(got[kv.first], kv.second, 1e-6, kv.first);
  }
  // Under no-grad (evaluation) the same loss.
  torch::NoGradGuard ng;
  EXPECT_NEAR(model->forward_loss(ids, mask, labels).item<double>(), ref.item<double>(),
              1e-6 * std::abs(ref.item<double>()));
  // No labelled position: zero, and the count says so.
  EXPECT_EQ(model->forward_loss(ids, mask, torch::full({B, T}, -100, torch::kLong), &count).item<double>(), 0.0);
  EXPECT_EQ(count, 0);
}

}  // namespace

TEST(ForwardLoss, EqualsTheLossOfTheFullLogits) {
  for (const ModelCase& mc : {ModelCase{"llama", false, false}, ModelCase{"llama", true, false},
                              ModelCase{"qwen2", false, false}, ModelCase{"glm4", false, false},
                              ModelCase{"chatglm3", false, false}, ModelCase{"llama", false, true},
                              ModelCase{"glm4", false, true}})
    check_forward_loss(mc);
}

TEST(ForwardCached, LastOnlyIsTheLastRow) {
  for (const char* type : {"llama", "glm4"}) {
    SCOPED_TRACE(type);
    auto model = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(50, {32, 48, 4, 2}, type), 5, 0.2});
    model->eval();
    torch::NoGradGuard ng;
    auto ids = torch::tensor({1, 7, 3, 22, 9, 4, 4, 0, 2, 1, 5, 6, 8, 13, 31, 2, 2, 7}, torch::kLong).view({2, -1});
    auto mask = torch::ones({2, 9}, torch::kLong);
    mask[1].narrow(0, 0, 2).zero_();  // left padding, as generate_batch makes
    models::KVCache full_cache, last_cache;
    auto full = model->forward_cached(ids, full_cache, mask);
    auto last = model->forward_cached(ids, last_cache, mask, /*last_only=*/true);
    ASSERT_EQ(last.sizes(), (std::vector<int64_t>{2, 1, 50}));
    EXPECT_LE((last.select(1, 0) - full.select(1, -1)).abs().max().item<double>(), 1e-6);
    // The caches are the same, so decoding continues identically.
    EXPECT_EQ(last_cache.length, full_cache.length);
    auto next = torch::tensor({3, 4}, torch::kLong).view({2, 1});
    auto a = model->forward_cached(next, full_cache, at::Tensor(), true);
    auto b = model->forward_cached(next, last_cache, at::Tensor(), true);
    EXPECT_TRUE(torch::equal(a, b));
  }
}

TEST(ForwardLoss, TrainingLossesFollowTheFullLogitsPath) {
  // Ten AdamW steps of full fine-tuning, once with each loss: per-step losses within 1e-6.
  std::vector<double> losses[2];
  for (int path = 0; path < 2; ++path) {
    auto model = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(61, {32, 48, 4, 2}, "llama"), 21, 0.2});
    model->set_loss_chunk_tokens(5);
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-2));
    torch::manual_seed(22);
    auto ids = torch::randint(0, 61, {3, 12}, torch::kLong);
    auto mask = torch::ones({3, 12}, torch::kLong);
    mask[2].narrow(0, 8, 4).zero_();
    auto labels = ids.masked_fill(mask == 0, -100);
    labels.narrow(1, 0, 2).fill_(-100);
    for (int step = 0; step < 10; ++step) {
      opt.zero_grad();
      auto loss = (path == 0 ? models::causal_lm_loss_sum(model->forward(ids, mask), labels)
                             : model->forward_loss(ids, mask, labels)) / 25.0;
      loss.backward();
      opt.step();
      losses[path].push_back(loss.item<double>());
    }
  }
  for (size_t k = 0; k < losses[0].size(); ++k)
    EXPECT_NEAR(losses[1][k], losses[0][k], 1e-6 * std::abs(losses[0][k])) << "step " << k;
  EXPECT_LT(losses[0].back(), 0.8 * losses[0].front());  // it did train
}
