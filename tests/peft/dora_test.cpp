// DoRA (peft_config.use_dora) held to hand-derived math, PEFT 0.14's formulas written out
// here independently of peft/lora.cpp: the magnitude init (row norms of W + s BA, in the base
// dtype), the forward (m / ||W + s BA||) (W + s BA) x + b with the norm detached from
// autograd, PEFT's dropout path, the on-disk names and the errors, and merge. The real PEFT is
// the reference in tests/peft/dora_parity_test.cpp and tests/parity/hf_parity_test.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "models/model.h"
#include "models/safetensors.h"
#include "peft/merge.h"
#include "peft/strategy.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

// Qwen2 has biases on q/k/v: the forward's (y - b) path is exercised.
std::shared_ptr<models::CausalLM> tiny(uint64_t seed, const std::string& type = "qwen2") {
  auto m = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(40, {16, 24, 4, 2}, type), seed});
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters())
    if (p.key().find(".bias") != std::string::npos) p.value().normal_(0, 0.1);
  return m;
}

nlohmann::json dora_cfg(nlohmann::json targets = {"q_proj", "v_proj", "down_proj"}, double dropout = 0.0) {
  return {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", 4},         {"lora_alpha", 8},
          {"lora_dropout", dropout}, {"target_modules", targets}, {"use_dora", true}};
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("ftrun_dora_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

models::Linear linear_at(models::CausalLM& m, const std::string& path) {
  for (const auto& kv : m.linears())
    if (kv.first == path) return kv.second;
  throw std::runtime_error("no linear " + path);
}

const std::string kQ = "model.layers.0.self_attn.q_proj";

// Random B (non-zero) and a magnitude away from the norm, so every term matters.
void randomise(peft::Strategy& s) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  for (auto& kv : s.trainable()) {
    if (kv.first.find("lora_B") != std::string::npos) kv.second.normal_(0, 0.2);
    if (kv.first.find("lora_magnitude_vector") != std::string::npos)
      kv.second.mul_(1 + 0.2 * torch::randn(kv.second.sizes()));
  }
}

at::Tensor named(const peft::NamedTensors& t, const std::string& name) {
  for (const auto& kv : t)
    if (kv.first == name) return kv.second;
  throw std::runtime_error("no trainable " + name);
}

at::Tensor row_norm(const at::Tensor& w) { return w.pow(2).sum(1).sqrt(); }

}  // namespace

TEST(Dora, MagnitudeStartsAsTheRowNormsAndTheOutputIsUnchanged) {
  auto m = tiny(1);
  auto x = torch::randn({2, 3, 16});
  torch::NoGradGuard ng;
  auto lin = linear_at(*m, kQ);
  auto before = lin->forward(x);
  auto s = peft::make_strategy(dora_cfg());
  s->apply(*m);
  auto t = s->trainable();
  ASSERT_EQ(t.size(), 3u * 2 * 3);  // A, B, m for 3 targets in 2 layers
  auto mag = named(t, "base_model.model." + kQ + ".lora_magnitude_vector");
  EXPECT_EQ(mag.scalar_type(), at::kFloat);
  EXPECT_TRUE(mag.requires_grad());
  EXPECT_TRUE(torch::allclose(mag, row_norm(lin->weight), 1e-6, 0));
  // B = 0: m / ||W|| = 1, and the layer's output is the base output.
  EXPECT_TRUE(torch::allclose(lin->forward(x), before, 1e-6, 1e-6));
}

TEST(Dora, ForwardIsMagnitudeTimesDirection) {
  auto m = tiny(2);
  auto s = peft::make_strategy(dora_cfg());
  s->apply(*m);
  randomise(*s);
  auto lin = linear_at(*m, kQ);
  auto t = s->trainable();
  auto A = named(t, "base_model.model." + kQ + ".lora_A.weight");
  auto B = named(t, "base_model.model." + kQ + ".lora_B.weight");
  auto mag = named(t, "base_model.model." + kQ + ".lora_magnitude_vector");
  const double scale = 8.0 / 4;
  auto x = torch::randn({2, 3, 16});
  m->eval();
  auto got = lin->forward(x);
  // V = W + s BA, y = (m / ||V||_row) * V x + b, the norm a constant for autograd.
  auto V = lin->weight + scale * torch::matmul(B, A);
  auto norm = row_norm(V).detach();
  auto want = torch::matmul(x, ((mag / norm).view({-1, 1}) * V).t()) + lin->bias;
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << (got - want).abs().max();
  // Gradients: those of the formula with the norm detached (DoRA paper 4.3, as PEFT does); a
  // norm inside autograd would change the A and B gradients.
  auto w = torch::randn(got.sizes());
  (got * w).sum().backward();
  auto gA = A.grad().clone(), gB = B.grad().clone(), gm = mag.grad().clone();
  for (auto& p : {A, B, mag}) p.mutable_grad().reset();
  auto V2 = lin->weight + scale * torch::matmul(B, A);
  auto want2 = torch::matmul(x, ((mag / row_norm(V2).detach()).view({-1, 1}) * V2).t()) + lin->bias;
  (want2 * w).sum().backward();
  EXPECT_TRUE(torch::allclose(gA, A.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(gB, B.grad(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(gm, mag.grad(), 1e-4, 1e-5));
  EXPECT_GT(gm.abs().max().item<double>(), 0.0);
}

// PEFT 0.14 with lora_dropout > 0 while training: the base result keeps x, and the DoRA term
// is (m/n - 1) W x' + (m/n) s B A x' with x' = dropout(x) (W x' recomputed, without bias).
TEST(Dora, DropoutWhileTrainingAppliesToTheWholeDoraTerm) {
  auto m = tiny(3);
  auto s = peft::make_strategy(dora_cfg({"q_proj"}, 0.3));
  s->apply(*m);
  randomise(*s);
  auto lin = linear_at(*m, kQ);
  auto t = s->trainable();
  auto A = named(t, "base_model.model." + kQ + ".lora_A.weight");
  auto B = named(t, "base_model.model." + kQ + ".lora_B.weight");
  auto mag = named(t, "base_model.model." + kQ + ".lora_magnitude_vector");
  const double scale = 2.0;
  auto x = torch::randn({2, 5, 16});
  torch::NoGradGuard ng;
  m->train();
  torch::manual_seed(77);
  auto got = lin->forward(x);
  torch::manual_seed(77);
  auto xd = torch::dropout(x, 0.3, true);
  auto W = lin->weight;
  auto k = (mag / row_norm(W + scale * torch::matmul(B, A))).view({1, -1});
  auto want = torch::matmul(x, W.t()) + lin->bias + (k - 1) * torch::matmul(xd, W.t()) +
              k * torch::matmul(torch::matmul(xd, A.t()), B.t()) * scale;
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << (got - want).abs().max();
  EXPECT_FALSE(torch::allclose(xd, x));
  // In eval the dropout is off: the plain formula.
  m->eval();
  auto V = W + scale * torch::matmul(B, A);
  auto plain = torch::matmul(x, ((mag / row_norm(V)).view({-1, 1}) * V).t()) + lin->bias;
  EXPECT_TRUE(torch::allclose(lin->forward(x), plain, 1e-5, 1e-5));
}

// On a bf16-held base PEFT 0.14 computes the initial norm with the adapter already moved to
// bf16 (torch.linalg.norm of a bf16 tensor: rounded to bf16), then upcasts it to fp32; the
// forward's norm is of W.to(fp32) (measured with the pinned PEFT: its magnitude equals
// linalg.norm(W_bf16, dim=1) exactly and differs from the fp32 norm by up to 1.5e-3).
TEST(Dora, Bf16BaseNormIsTakenInBf16AtInit) {
  auto m = tiny(4);
  m->to(at::kBFloat16);
  auto s = peft::make_strategy(dora_cfg());
  s->apply(*m);
  auto lin = linear_at(*m, kQ);
  auto mag = named(s->trainable(), "base_model.model." + kQ + ".lora_magnitude_vector");
  EXPECT_EQ(mag.scalar_type(), at::kFloat);
  auto want = at::linalg_norm(lin->weight, c10::nullopt, at::IntArrayRef{1}, false, c10::nullopt).to(at::kFloat);
  ASSERT_EQ(want.scalar_type(), at::kFloat);
  EXPECT_TRUE(torch::equal(mag, want));
  // It is bf16-rounded: representable in bf16.
  EXPECT_TRUE(torch::equal(mag, mag.to(at::kBFloat16).to(at::kFloat)));
  // Forward on a bf16 base: fp32 adapter math, result back in bf16.
  randomise(*s);
  torch::NoGradGuard ng;
  m->eval();
  auto t = s->trainable();
  auto A = named(t, "base_model.model." + kQ + ".lora_A.weight");
  auto B = named(t, "base_model.model." + kQ + ".lora_B.weight");
  auto x = torch::randn({1, 4, 16}).to(at::kBFloat16);
  auto got = lin->forward(x);
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  auto W = lin->weight.to(at::kFloat);
  auto V = W + 2.0 * torch::matmul(B, A);
  auto want_y = torch::matmul(x.to(at::kFloat), ((mag / row_norm(V)).view({-1, 1}) * V).t()) + lin->bias.to(at::kFloat);
  EXPECT_TRUE(torch::allclose(got.to(at::kFloat), want_y, 2e-2, 2e-2)) << (got.to(at::kFloat) - want_y).abs().max();
}

TEST(Dora, SavesPeftNamesAndLoadsBack) {
  auto m = tiny(5);
  auto s = peft::make_strategy(dora_cfg());
  s->apply(*m);
  randomise(*s);
  auto dir = temp_dir("save");
  s->save(dir.string(), "/models/base");
  nlohmann::json cfg;
  std::ifstream(dir / "adapter_config.json") >> cfg;
  EXPECT_EQ(cfg["use_dora"], true);
  auto file = st::File::open((dir / "adapter_model.safetensors").string());
  EXPECT_EQ(file->tensors().size(), 18u);
  // PEFT 0.14's get_peft_model_state_dict name: ".lora_magnitude_vector", no ".weight".
  const std::string key = "base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector";
  ASSERT_TRUE(file->contains(key));
  EXPECT_EQ(file->get(key).sizes(), (std::vector<int64_t>{16}));
  EXPECT_EQ(file->get(key).scalar_type(), at::kFloat);

  auto x = torch::tensor({1, 5, 9, 2, 7}, torch::kLong).view({1, -1});
  torch::NoGradGuard ng;
  m->eval();
  auto expected = m->forward(x, at::Tensor());
  auto fresh = tiny(5);
  auto loaded = peft::strategy_from_adapter_dir(dir.string());
  loaded->apply(*fresh);
  loaded->load(dir.string());
  fresh->eval();
  EXPECT_TRUE(torch::equal(fresh->forward(x, at::Tensor()), expected));

  // The same adapter into plain LoRA: the magnitude vectors are named, not ignored.
  auto plain = tiny(5);
  auto cfg_plain = dora_cfg();
  cfg_plain["use_dora"] = false;
  auto lora = peft::make_strategy(cfg_plain);
  lora->apply(*plain);
  try {
    lora->load(dir.string());
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("lora_magnitude_vector (a DoRA adapter"), std::string::npos) << e.what();
  }
  // A plain LoRA adapter into DoRA: the missing magnitude is named.
  auto dir2 = temp_dir("plain");
  lora->save(dir2.string(), "/models/base");
  auto d2 = tiny(5);
  auto dora = peft::make_strategy(dora_cfg());
  dora->apply(*d2);
  try {
    dora->load(dir2.string());
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("missing DoRA tensor"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

TEST(Dora, ConfigAndResumeKey) {
  auto j = dora_cfg();
  j["use_dora"] = "yes";
  try {
    peft::make_strategy(j);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("peft_config.use_dora: expected true or false"), std::string::npos) << e.what();
  }
  auto keys = peft::make_strategy(dora_cfg())->resume_keys();
  EXPECT_NE(std::find(keys.begin(), keys.end(), "use_dora"), keys.end());
}

// merge_lora folds DoRA as PEFT's merge_and_unload: the merged model's logits equal base +
// adapter's, and each merged row's norm is the magnitude.
TEST(Dora, MergeEqualsTheAdaptedModel) {
  for (const std::string type : {"qwen2", "glm4"}) {
    auto m = tiny(6, type);
    nlohmann::json targets = type == "glm4" ? nlohmann::json{"query_key_value", "dense_4h_to_h"}
                                               : nlohmann::json{"q_proj", "v_proj", "down_proj"};
    auto s = peft::make_strategy(dora_cfg(targets));
    s->apply(*m);
    randomise(*s);
    auto dir = temp_dir("merge_" + type);
    s->save(dir.string(), "unused");
    auto x = torch::tensor({1, 5, 9, 2, 7, 33, 12}, torch::kLong).view({1, -1});
    torch::NoGradGuard ng;
    m->eval();
    auto expected = m->forward(x, at::Tensor());
    auto base = tiny(6, type);
    base->eval();
    auto before = base->forward(x, at::Tensor());
    auto merged = peft::merge_lora(*base, dir.string());
    EXPECT_EQ(merged.size(), type == "glm4" ? 4u : 6u);  // targets x 2 layers
    auto after = base->forward(x, at::Tensor());
    EXPECT_TRUE(torch::allclose(after, expected, 1e-5, 1e-5)) << type << " " << (after - expected).abs().max();
    EXPECT_GT((before - expected).abs().max().item<double>(), 1e-3) << type;
    auto file = st::File::open((dir / "adapter_model.safetensors").string());
    for (const auto& path : merged) {
      auto mag = file->get("base_model.model." + path + ".lora_magnitude_vector");
      EXPECT_TRUE(torch::allclose(row_norm(linear_at(*base, path)->weight), mag, 1e-5, 1e-6)) << path;
    }
    fs::remove_all(dir);
  }
}
