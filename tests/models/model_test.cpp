// Model math and HF-format I/O of the Llama family. Exact parity with the HF formulas is in
// tests/parity; these tests check properties that hold whatever the weights are.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "models/llama.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "models/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun::models;

namespace {

ModelConfig tiny(int64_t heads = 4, int64_t kv = 2, bool tie = false, std::string type = "llama") {
  TinySpec s;
  s.model_type = type;
  s.vocab_size = 50;
  s.hidden_size = 32;
  s.intermediate_size = 48;
  s.num_attention_heads = heads;
  s.num_key_value_heads = kv;
  s.tie_word_embeddings = tie;
  return parse_model_config(tiny_config(s), "tiny/config.json");
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_models_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

at::Tensor ids(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong).view({1, -1}); }

}  // namespace

TEST(Model, ParameterNamesAreHfNames) {
  torch::manual_seed(0);
  auto m = build_model(tiny());
  auto params = m->named_parameters();
  for (const char* n : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                        "model.layers.1.self_attn.k_proj.weight", "model.layers.1.mlp.down_proj.weight",
                        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                        "model.norm.weight", "lm_head.weight"})
    EXPECT_TRUE(params.contains(n)) << n;
  EXPECT_FALSE(params.contains("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_EQ(params["model.layers.0.self_attn.k_proj.weight"].sizes(), (std::vector<int64_t>{16, 32}));
  // 2 layers x (4 attn + 3 mlp) + lm_head
  EXPECT_EQ(m->linears().size(), 15u);
}

TEST(Model, Qwen2HasQkvBiasButNoOutputBias) {
  auto m = build_model(tiny(4, 2, false, "qwen2"));
  auto params = m->named_parameters();
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.v_proj.bias"));
  EXPECT_FALSE(params.contains("model.layers.0.self_attn.o_proj.bias"));
}

TEST(Model, TiedEmbeddingsHaveNoLmHead) {
  torch::manual_seed(1);
  auto m = build_model(tiny(4, 2, true));
  EXPECT_FALSE(m->named_parameters().contains("lm_head.weight"));
  // The logits are the final hidden state against the embedding matrix: bumping one
  // embedding row moves exactly that vocabulary column of every position's logits.
  torch::NoGradGuard ng;
  auto x = ids({3, 4, 5});
  auto before = m->forward(x, at::Tensor());
  m->named_parameters()["model.embed_tokens.weight"][7].add_(0.5);
  auto after = m->forward(x, at::Tensor());
  auto diff = (after - before).abs().sum(std::vector<int64_t>{0, 1});
  EXPECT_GT(diff[7].item<double>(), 1e-4);
  diff[7] = 0;
  EXPECT_LT(diff.max().item<double>(), 1e-6);
}

TEST(Model, CausalFutureTokensDoNotChangeEarlierLogits) {
  torch::manual_seed(2);
  auto m = build_model(tiny());
  torch::NoGradGuard ng;
  auto a = m->forward(ids({1, 2, 3, 4, 5}), at::Tensor());
  auto b = m->forward(ids({1, 2, 3, 9, 11}), at::Tensor());
  EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 3), b.narrow(1, 0, 3), 0, 1e-6));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 3, 2), b.narrow(1, 3, 2), 0, 1e-3));
}

TEST(Model, RightPaddingLeavesRealPositionsUnchanged) {
  torch::manual_seed(3);
  auto m = build_model(tiny());
  torch::NoGradGuard ng;
  auto single = m->forward(ids({5, 6, 7}), at::Tensor());
  auto batch = torch::tensor({5, 6, 7, 0, 0, 8, 9, 10, 11, 12}, torch::kLong).view({2, 5});
  auto mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, torch::kLong).view({2, 5});
  auto out = m->forward(batch, mask);
  EXPECT_TRUE(torch::allclose(out[0].narrow(0, 0, 3), single[0], 0, 1e-5));
  auto second = m->forward(ids({8, 9, 10, 11, 12}), at::Tensor());
  EXPECT_TRUE(torch::allclose(out[1], second[0], 0, 1e-5));
}

TEST(Model, GroupedQueryAttentionEqualsMhaWithRepeatedKvHeads) {
  // A GQA model (2 kv heads for 4 query heads) must equal an MHA model whose k/v weights
  // repeat each kv head for its group of query heads: that is what GQA means.
  torch::manual_seed(4);
  auto gqa = build_model(tiny(4, 2));
  auto mha = build_model(tiny(4, 4));
  torch::NoGradGuard ng;
  auto gp = gqa->named_parameters();
  auto mp = mha->named_parameters();
  for (const auto& kv : gp) {
    const auto& name = kv.key();
    bool is_kv = name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos;
    if (!is_kv) {
      mp[name].copy_(kv.value());
      continue;
    }
    auto w = kv.value().view({2, 8, 32});  // [kv_heads, head_dim, hidden]
    mp[name].copy_(w.repeat_interleave(2, 0).reshape({32, 32}));
  }
  auto x = ids({1, 4, 9, 16, 25, 36});
  EXPECT_TRUE(torch::allclose(gqa->forward(x, at::Tensor()), mha->forward(x, at::Tensor()), 0, 1e-5));
}

TEST(Model, RopeInvFreqPlainAndLlama3) {
  auto c = tiny();
  c.head_dim = 8;
  c.rope_theta = 10000;
  auto plain = rope_inv_freq(c);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(plain[i].item<double>(), std::pow(10000.0, -2.0 * i / 8), 1e-7);

  // Llama 3.1 rescaling, computed here from the published rule in double precision:
  // wavelength < old/high_ff: unchanged; > old/low_ff: divided by factor; else blended.
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
  c.rope_theta = 500;
  auto scaled = rope_inv_freq(c);
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < 4; ++i) {
    double f = std::pow(500.0, -2.0 * i / 8), wl = 2 * M_PI / f, want;
    if (wl < 64.0 / 4.0) { want = f; ++kept; }
    else if (wl > 64.0 / 1.0) { want = f / 8.0; ++divided; }
    else {
      double smooth = (64.0 / wl - 1.0) / (4.0 - 1.0);
      want = (1 - smooth) * f / 8.0 + smooth * f;
      ++blended;
    }
    EXPECT_NEAR(scaled[i].item<double>(), want, 1e-6 * want) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(Model, LossIsShiftedCrossEntropyOverLabelTokens) {
  // logits [1, 3, 4]; labels [-100, 2, 0]: position 0 predicts label 2, position 1 label 0.
  auto logits = torch::tensor({0.1, 0.2, 0.3, 0.4, 1.0, -1.0, 0.5, 0.0, 9.0, 9.0, 9.0, 9.0}).view({1, 3, 4});
  auto labels = torch::tensor({-100, 2, 0}, torch::kLong).view({1, 3});
  int64_t count = 0;
  double got = causal_lm_loss_sum(logits, labels, &count).item<double>();
  auto lse = [](std::vector<double> v) {
    double s = 0;
    for (double x : v) s += std::exp(x);
    return std::log(s);
  };
  double want = (lse({0.1, 0.2, 0.3, 0.4}) - 0.3) + (lse({1.0, -1.0, 0.5, 0.0}) - 1.0);
  EXPECT_EQ(count, 2);
  EXPECT_NEAR(got, want, 1e-6);
}

TEST(Model, SaveLoadRoundTripGivesSameLogits) {
  torch::manual_seed(5);
  auto m = build_model(tiny());
  auto dir = temp_dir("roundtrip");
  save_pretrained(*m, dir.string());
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  auto back = load_pretrained(dir.string());
  torch::NoGradGuard ng;
  auto x = ids({2, 3, 5, 7});
  EXPECT_TRUE(torch::equal(m->forward(x, at::Tensor()), back->forward(x, at::Tensor())));
  // Sharded form with an index reads back the same.
  auto sharded = temp_dir("sharded");
  save_pretrained(*m, sharded.string(), 20000);
  EXPECT_TRUE(fs::exists(sharded / "model.safetensors.index.json"));
  auto back2 = load_pretrained(sharded.string());
  EXPECT_TRUE(torch::equal(m->forward(x, at::Tensor()), back2->forward(x, at::Tensor())));
  fs::remove_all(dir);
  fs::remove_all(sharded);
}

TEST(Model, LoadRejectsMissingUnexpectedAndMisshapenTensors) {
  torch::manual_seed(6);
  auto m = build_model(tiny());
  auto dir = temp_dir("reject");
  save_pretrained(*m, dir.string());
  auto all = ftrun::st::load_all(dir.string());
  auto rewrite = [&](std::map<std::string, at::Tensor> t) {
    ftrun::st::NamedTensors v(t.begin(), t.end());
    ftrun::st::save((dir / "model.safetensors").string(), v);
  };
  auto expect_error = [&](const std::string& phrase) {
    try {
      load_pretrained(dir.string());
      FAIL() << "expected an error containing " << phrase;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
    }
  };
  auto t = all;
  t.erase("model.norm.weight");
  rewrite(t);
  expect_error("missing tensors: model.norm.weight");
  t = all;
  t["model.layers.9.mlp.up_proj.weight"] = torch::zeros({2});
  rewrite(t);
  expect_error("unexpected tensors: model.layers.9.mlp.up_proj.weight");
  t = all;
  t["model.norm.weight"] = torch::zeros({31});
  rewrite(t);
  expect_error("'model.norm.weight' has shape [31]");
  fs::remove_all(dir);
}

TEST(Model, ConfigErrorsNameFileAndKey) {
  auto expect_error = [](nlohmann::json j, const std::string& phrase) {
    try {
      parse_model_config(j, "/m/config.json");
      FAIL() << "expected " << phrase;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("/m/config.json"), std::string::npos);
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  auto good = tiny_config(TinySpec{"llama", 10});
  auto j = good;
  j.erase("hidden_size");
  expect_error(j, "'hidden_size'");
  j = good;
  j["num_key_value_heads"] = 3;
  expect_error(j, "multiple of num_key_value_heads");
  j = good;
  j["vocab_size"] = "many";
  expect_error(j, "'vocab_size' must be an integer");
  j = good;
  j["model_type"] = "bert";
  expect_error(j, "model_type 'bert'");
  j = good;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error(j, "rope_scaling type 'yarn'");
  EXPECT_THROW(load_model_config("/nonexistent/dir"), std::runtime_error);
}
