// P-Tuning v2 (PREFIX_TUNING) and full fine-tuning strategies: the prefix math on a model
// whose attention is hand-computable, PEFT's prompt_embeddings layout, round trips.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "models/model.h"
#include "models/safetensors.h"
#include "peft/strategy.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_pt_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// One layer, one head of width 4, q_proj = 0 (every score is 0: uniform attention over the
// visible slots), MLP output 0. Then, per position t with N prefix slots of zero keys and
// values pv:  h_t = x_t + Wo * (sum_{j<=t} Wv n_j + sum_i pv_i) / (N + t + 1),
// n_j = rmsnorm(x_j), logits_t = lm_head(rmsnorm(h_t)) -- computed below by hand.
std::shared_ptr<models::CausalLM> uniform_attention_model() {
  auto s = ftrun::testing::tiny_spec(11, {4, 6, 1, 1});
  s.num_hidden_layers = 1;
  auto m = ftrun::testing::make_tiny_model({s, 21});
  torch::NoGradGuard ng;
  auto p = m->named_parameters();
  for (auto& kv : p) kv.value().normal_(0, 0.5);
  p["model.layers.0.self_attn.q_proj.weight"].zero_();
  p["model.layers.0.mlp.down_proj.weight"].zero_();
  for (const char* n : {"model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                        "model.norm.weight"})
    p[n].fill_(1.0);
  return m;
}

at::Tensor rms(const at::Tensor& x) { return x / torch::sqrt(x.pow(2).mean(-1, true) + 1e-5); }

at::Tensor expected_logits(models::CausalLM& m, const at::Tensor& ids, const at::Tensor& prefix_v) {
  auto p = m.named_parameters();
  auto x = p["model.embed_tokens.weight"].index_select(0, ids);  // [T, 4]
  auto v = torch::matmul(rms(x), p["model.layers.0.self_attn.v_proj.weight"].t());
  int64_t T = ids.size(0), N = prefix_v.defined() ? prefix_v.size(0) : 0;
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < T; ++t) {
    auto sum = v.narrow(0, 0, t + 1).sum(0);
    if (N > 0) sum = sum + prefix_v.sum(0);
    rows.push_back(sum / double(N + t + 1));
  }
  auto attn = torch::stack(rows);
  auto h = x + torch::matmul(attn, p["model.layers.0.self_attn.o_proj.weight"].t());
  return torch::matmul(rms(h), p["lm_head.weight"].t());
}

nlohmann::json prefix_cfg(int n) { return {{"peft_type", "PREFIX_TUNING"}, {"task_type", "CAUSAL_LM"}, {"num_virtual_tokens", n}}; }

}  // namespace

TEST(PrefixTuning, ZeroPrefixOnlyAddsAttentionSlots) {
  auto m = uniform_attention_model();
  auto ids = torch::tensor({3, 1, 4, 1, 5}, torch::kLong);
  torch::NoGradGuard ng;
  auto base = m->forward(ids.view({1, -1}), at::Tensor())[0];
  EXPECT_TRUE(torch::allclose(base, expected_logits(*m, ids, at::Tensor()), 1e-5, 1e-5));
  auto s = peft::make_strategy(prefix_cfg(3));
  s->apply(*m);
  for (auto& kv : s->trainable()) kv.second.zero_();
  auto with_prefix = m->forward(ids.view({1, -1}), at::Tensor())[0];
  EXPECT_TRUE(torch::allclose(with_prefix, expected_logits(*m, ids, torch::zeros({3, 4})), 1e-5, 1e-5));
  EXPECT_FALSE(torch::allclose(with_prefix, base, 1e-3, 1e-3));  // the extra slots dilute attention
}

TEST(PrefixTuning, PromptEmbeddingsLayoutIsPefts) {
  // Written by hand in PEFT's layout: row view(N, 2L, kv_heads, head_dim), 2i = key of layer
  // i, 2i + 1 = its value. Keys 0 keep attention uniform; values are what we choose.
  auto m = uniform_attention_model();
  auto s = peft::make_strategy(prefix_cfg(2));
  s->apply(*m);
  auto dir = temp_dir("layout");
  auto values = torch::tensor({0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f, 0.0f, 1.0f}).view({2, 4});
  auto prompt = torch::cat({torch::zeros({2, 4}), values}, 1);  // [N, 2 * 1 layer * 4]
  st::save((dir / "adapter_model.safetensors").string(), {{"prompt_embeddings", prompt}});
  s->load(dir.string());
  torch::NoGradGuard ng;
  auto ids = torch::tensor({2, 7, 1}, torch::kLong);
  auto got = m->forward(ids.view({1, -1}), at::Tensor())[0];
  EXPECT_TRUE(torch::allclose(got, expected_logits(*m, ids, values), 1e-5, 1e-5));
  fs::remove_all(dir);
}

TEST(PrefixTuning, AdapterRoundTripAndPaddingRows) {
  const ftrun::testing::TinyOptions tiny{ftrun::testing::tiny_spec(30, {16, 24, 4, 2}), 5};
  auto m = ftrun::testing::make_tiny_model(tiny);
  auto s = peft::make_strategy({{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}, {"prefix_projection", true},
                                {"encoder_hidden_size", 12}});
  s->apply(*m);
  EXPECT_EQ(s->trainable().size(), 5u);  // embedding + two linears (weight, bias)
  auto dir = temp_dir("roundtrip");
  s->save(dir.string(), "/base");
  nlohmann::json j;
  std::ifstream(dir / "adapter_config.json") >> j;
  EXPECT_EQ(j["peft_type"], "PREFIX_TUNING");
  EXPECT_EQ(j["token_dim"], 8);  // head_dim 4 x 2 kv heads
  EXPECT_EQ(j["num_attention_heads"], 2);
  EXPECT_EQ(j["num_layers"], 2);
  EXPECT_EQ(j["num_virtual_tokens"], 4);
  auto f = st::File::open((dir / "adapter_model.safetensors").string());
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].name, "prompt_embeddings");
  EXPECT_EQ(f->tensors()[0].shape, (std::vector<int64_t>{4, 2 * 2 * 8}));

  torch::NoGradGuard ng;
  auto ids = torch::tensor({1, 2, 3, 4, 0, 0}, torch::kLong).view({1, -1});
  auto mask = torch::tensor({1, 1, 1, 1, 0, 0}, torch::kLong).view({1, -1});
  auto expected = m->forward(ids, mask);
  auto fresh = ftrun::testing::make_tiny_model(tiny);  // the same seed: the same base weights
  auto loaded = peft::strategy_from_adapter_dir(dir.string());  // the saved output, unprojected
  loaded->apply(*fresh);
  loaded->load(dir.string());
  auto got = fresh->forward(ids, mask);
  EXPECT_TRUE(torch::allclose(got.narrow(1, 0, 4), expected.narrow(1, 0, 4), 1e-5, 1e-6));
  EXPECT_TRUE(torch::isfinite(got).all().item<bool>());  // padding rows still see the prefix
  fs::remove_all(dir);
}

TEST(PrefixTuning, ConfigErrors) {
  auto m = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(30, {16, 24, 4, 2})});
  try {
    peft::make_strategy({{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}, {"token_dim", 256}})->apply(*m);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("peft_config.token_dim: 256 does not fit the model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(peft::make_strategy({{"peft_type", "PREFIX_TUNING"}}), std::runtime_error);
  EXPECT_THROW(peft::make_strategy({{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}, {"virtual_tokens", 2}}),
               std::runtime_error);
  // ChatGLM3's pre_seq_len maps onto num_virtual_tokens.
  auto s = peft::make_strategy({{"peft_type", "PREFIX_TUNING"}, {"pre_seq_len", 3}});
  s->apply(*m);
  EXPECT_EQ(s->trainable()[0].second.size(0), 3);
}

TEST(FullStrategy, SaveLoadRoundTripEqualsInMemoryWeights) {
  auto m = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(30, {16, 24, 4, 2}), 8});
  auto s = peft::make_strategy(nullptr);
  EXPECT_EQ(s->name(), "FULL");
  s->apply(*m);
  int64_t n = 0;
  for (const auto& kv : s->trainable()) {
    EXPECT_TRUE(kv.second.requires_grad());
    n += kv.second.numel();
  }
  int64_t total = 0;
  for (const auto& p : m->parameters()) total += p.numel();
  EXPECT_EQ(n, total);
  {
    torch::NoGradGuard ng;
    for (auto& kv : s->trainable()) kv.second.add_(0.01);
  }
  auto dir = temp_dir("full");
  s->save(dir.string(), "");
  auto f = st::File::open((dir / "model.safetensors").string());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  auto back = models::load_pretrained(dir.string());
  auto a = m->named_parameters();
  for (const auto& p : back->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), a[p.key()])) << p.key();
  fs::remove_all(dir);
}
