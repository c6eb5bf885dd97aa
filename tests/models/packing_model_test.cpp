// Packing (issue 18) in the model families: a packed batch (attention_mask = sample index
// within the row, first label of each sample -100; data/packing.h) gives every sample the
// loss it has alone, and the same gradients as the samples run one by one, on tiny
// llama-shaped (llama, qwen2) and ChatGLM-shaped (chatglm3, glm4) models, fully trained,
// with LoRA and with P-Tuning v2 prefixes. fp32, 1e-5. The reference is the unpacked
// computation, which the parity tests check against transformers / THUDM's code.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "data/packing.h"
#include "models/model.h"
#include "peft/strategy.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

constexpr int64_t kVocab = 61;

std::vector<data::Sample> make_samples(const std::vector<int64_t>& lengths) {
  torch::manual_seed(5);
  std::vector<data::Sample> out;
  for (int64_t n : lengths) {
    auto ids = torch::randint(1, kVocab, {n}, torch::kLong);
    data::Sample s;
    s.input_ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + n);
    s.labels = s.input_ids;
    // A prompt of a third of the sample carries no loss, as chat templates mask it.
    for (int64_t t = 0; t < n / 3; ++t) s.labels[size_t(t)] = -100;
    out.push_back(s);
  }
  return out;
}

std::map<std::string, at::Tensor> take_grads(models::CausalLM& m) {
  std::map<std::string, at::Tensor> out;
  for (auto& p : m.named_parameters())
    if (p.value().grad().defined()) {
      out[p.key()] = p.value().grad().clone();
      p.value().mutable_grad() = at::Tensor();
    }
  return out;
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  const double scale = std::max(1.0, want.abs().max().item<double>());
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << what;
}

struct Case {
  std::string type;      // tiny_spec model_type
  std::string strategy;  // FULL, LORA, PREFIX_TUNING
};

void check_packed_equals_unpacked(const Case& c) {
  SCOPED_TRACE(c.type + " " + c.strategy);
  const bool glm = c.type == "glm4" || c.type == "chatglm3";
  auto spec = ftrun::testing::tiny_spec(kVocab, {32, 48, 4, 2}, c.type);
  auto model = ftrun::testing::make_tiny_model({spec, 11, /*weight_std=*/0.2});
  std::unique_ptr<peft::Strategy> strategy;
  if (c.strategy == "LORA") {
    strategy = peft::make_strategy(nlohmann::json{
        {"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4},
        {"target_modules", glm ? nlohmann::json{"query_key_value", "dense"} : nlohmann::json{"q_proj", "v_proj", "o_proj"}}});
  } else if (c.strategy == "PREFIX_TUNING") {
    strategy = peft::make_strategy(nlohmann::json{{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}});
  } else {
    strategy = peft::make_strategy(nlohmann::json());
  }
  strategy->apply(*model);
  {
    // Non-zero adapters (LoRA's B starts at 0), so every trainable tensor gets a gradient.
    torch::NoGradGuard ng;
    torch::manual_seed(3);
    if (c.strategy != "FULL")
      for (auto& kv : strategy->trainable()) kv.second.add_(torch::randn(kv.second.sizes()) * 0.1);
  }
  const auto samples = make_samples({7, 5, 9, 4, 6});
  const std::vector<std::vector<int64_t>> plan = {{0, 1, 3}, {2, 4}};  // rows of 16 and 15 tokens
  const int64_t pad = 0;

  // Unpacked: each sample alone (batch of one, no padding); loss sums and gradients of
  // sum(loss) / all label tokens, as one accumulated step computes them.
  int64_t total = 0;
  std::vector<double> alone(samples.size());
  for (const auto& s : samples) total += data::collate({&s}, pad).num_label_tokens;
  for (size_t i = 0; i < samples.size(); ++i) {
    auto b = data::collate({&samples[i]}, pad);
    auto loss = model->forward_loss(b.input_ids, b.attention_mask, b.labels);
    alone[i] = loss.item<double>();
    (loss / double(total)).backward();
  }
  auto want = take_grads(*model);

  // Packed: two rows, the second padded; the head's loss in chunks of 4 labelled positions.
  std::vector<std::vector<const data::Sample*>> rows;
  for (const auto& r : plan) {
    rows.emplace_back();
    for (int64_t i : r) rows.back().push_back(&samples[size_t(i)]);
  }
  auto b = data::collate_packed(rows, pad);
  ASSERT_EQ(b.num_label_tokens, total);
  ASSERT_TRUE(models::is_packed_mask(b.attention_mask));
  model->set_loss_chunk_tokens(4);
  int64_t count = -1;
  auto loss = model->forward_loss(b.input_ids, b.attention_mask, b.labels, &count);
  EXPECT_EQ(count, total);
  double sum_alone = 0;
  for (double l : alone) sum_alone += l;
  EXPECT_NEAR(loss.item<double>(), sum_alone, 1e-5 * std::abs(sum_alone));
  (loss / double(total)).backward();
  auto got = take_grads(*model);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_GE(got.size(), strategy->trainable().size());
  for (const auto& kv : want) {
    ASSERT_TRUE(got.count(kv.first)) << kv.first;
    expect_close(got[kv.first], kv.second, kv.first);
  }

  // Per-sample losses out of the packed logits: each sample's span of its row.
  torch::NoGradGuard ng;
  auto logits = model->forward(b.input_ids, b.attention_mask);
  for (size_t r = 0; r < plan.size(); ++r) {
    int64_t start = 0;
    for (int64_t i : plan[r]) {
      const int64_t n = int64_t(samples[size_t(i)].input_ids.size());
      auto span = logits[int64_t(r)].narrow(0, start, n).unsqueeze(0);
      auto labels = b.labels[int64_t(r)].narrow(0, start, n).unsqueeze(0);
      const double l = models::causal_lm_loss_sum(span, labels).item<double>();
      EXPECT_NEAR(l, alone[size_t(i)], 1e-5 * std::max(1.0, std::abs(alone[size_t(i)]))) << "sample " << i;
      start += n;
    }
  }
  // The same rows under a plain 0/1 mask (the samples see each other, positions run on)
  // give another loss: the test above could fail.
  auto plain = (b.attention_mask != 0).to(torch::kLong);
  EXPECT_GT(std::abs(model->forward_loss(b.input_ids, plain, b.labels).item<double>() - sum_alone), 1e-3);
}

}  // namespace

TEST(PackedBatch, SameLossesAndGradientsAsUnpacked) {
  for (const char* type : {"llama", "qwen2", "chatglm3", "glm4"})
    for (const char* strategy : {"FULL", "LORA", "PREFIX_TUNING"}) check_packed_equals_unpacked({type, strategy});
}

TEST(PackedBatch, LayoutRestartsPositionsAndBlocksOtherSamples) {
  auto mask = torch::tensor({1, 1, 1, 2, 2, 0}, torch::kLong).view({1, 6});
  auto l = models::packed_layout(mask, torch::kCPU);
  auto pos = l.positions[0];
  EXPECT_TRUE(torch::equal(pos, torch::tensor({0, 1, 2, 0, 1, 0}, torch::kLong)));
  auto a = l.allowed[0][0];  // [6, 6]
  // Hand-written: sample 1 = tokens 0..2 causal, sample 2 = tokens 3..4 causal, the padding
  // query (5) sees everything.
  auto want = torch::tensor({1, 0, 0, 0, 0, 0,
                             1, 1, 0, 0, 0, 0,
                             1, 1, 1, 0, 0, 0,
                             0, 0, 0, 1, 0, 0,
                             0, 0, 0, 1, 1, 0,
                             1, 1, 1, 1, 1, 1}, torch::kBool).view({6, 6});
  EXPECT_TRUE(torch::equal(a, want));
  EXPECT_FALSE(models::is_packed_mask(torch::tensor({1, 1, 0}, torch::kLong).view({1, 3})));
  EXPECT_FALSE(models::is_packed_mask(at::Tensor()));
  EXPECT_THROW(models::packed_layout(torch::tensor({1, 2, 1}, torch::kLong).view({1, 3}), torch::kCPU), c10::Error);
}
