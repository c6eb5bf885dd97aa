// Issue 15: the BlueLM family (vivo-ai-lab/BlueLM, model_type "BlueLM"), built by the Llama
// class with BlueLM's stable-embedding LayerNorm and the 32K model's ntkmixed rotary scaling.
// BlueLM has no native transformers class, so the reference is tests/reference/bluelm_ref.py:
// transformers' own LlamaForCausalLM (build/pyref, .ci/install-pyref) loaded with the BlueLM
// checkpoint, plus the LayerNorm (torch.nn.functional.layer_norm, eps = rms_norm_eps) and the
// ntkmixed inv_freq, as vivo's modeling code / vLLM port define them. Checked here:
//   - config.json: use_stable_embedding (default true), rope_scaling {ntkmixed, factor, power}
//     and the refusal of anything else in rope_scaling, naming the key or type;
//   - ntkmixed frequencies against hand-derived values (the fp64 table in the spec, from
//     vivo's formula), and the plain table unchanged without scaling;
//   - logits within 1e-5 of the reference on the embedded tiny BlueLM, on a copy with
//     ntkmixed (factor 16, power 0.3: BlueLM-7B-Chat-32K's), and on a full-SFT-style save with
//     every weight moved; turning the LayerNorm or the scaling off visibly changes them;
//   - KV-cached decoding (forward_cached) equals the reference's full forward;
//   - a LoRA adapter ftrun saves loads in PEFT on that model key for key with ftrun's logits.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "models/config.h"
#include "testing/errors.h"
#include "models/family.h"
#include "models/llama.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "peft/strategy.h"
#include "tests/parity/reference_io.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

const std::string kTiny = FTRUN_SOURCE_DIR "/examples/tiny/bluelm-model";
const std::string kRef = FTRUN_SOURCE_DIR "/tests/reference/bluelm_ref.py";
using ftrun::testing::max_diff;
using ftrun::testing::require_pyref;
using ftrun::testing::run_logged;

using ftrun::testing::error_of;

nlohmann::json tiny_json() {
  std::ifstream in(kTiny + "/config.json");
  return nlohmann::json::parse(in);
}

struct Scratch {
  fs::path dir;
  explicit Scratch(const std::string& name)
      : dir(fs::temp_directory_path() / ("ftrun_bluelm_" + name + "_" + std::to_string(getpid()))) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    if (!::testing::Test::HasFailure()) fs::remove_all(dir);
  }
};

// A copy of the embedded tiny BlueLM with config.json's rope_scaling set.
std::string copy_with_rope_scaling(const fs::path& dir, const nlohmann::json& rope_scaling) {
  auto out = dir / "model";
  fs::create_directories(out);
  for (const auto& e : fs::directory_iterator(kTiny)) fs::copy_file(e.path(), out / e.path().filename());
  auto j = tiny_json();
  j["rope_scaling"] = rope_scaling;
  fs::remove(out / "config.json");
  std::ofstream(out / "config.json") << j.dump(2);
  return out.string();
}

using Logits = ftrun::testing::ReferenceLogits;

// bluelm_ref.py's logits of make_batches' two micro-batches (random ids over the whole
// vocabulary, padding with BlueLM's <pad>).
Logits ref_logits(const fs::path& dir, const std::string& model_dir, const std::string& adapter = "",
                  const std::string& tag = "ref") {
  auto cfg = models::load_model_config(model_dir);
  Logits l;
  auto data = ftrun::testing::make_batches(cfg.vocab_size, cfg.pad_token_id);
  auto data_file = dir / (tag + "_data.json");
  std::ofstream(data_file) << data.dump();
  l.batches = ftrun::testing::load_reference_batches(data);
  l.file = dir / (tag + "_logits.safetensors");
  std::string cmd = ftrun::testing::pyref_python() + " " + kRef + " logits --model " + model_dir + " --data " +
                    data_file.string() + " --out " + l.file.string();
  if (!adapter.empty()) cmd += " --adapter " + adapter;
  run_logged(cmd, dir / (tag + ".log"));
  return l;
}

using ftrun::testing::worst_logits_diff;

// A model of `cfg` holding `from`'s weights (cfg may drop the LayerNorm or the scaling).
std::shared_ptr<models::CausalLM> with_weights_of(const models::ModelConfig& cfg, models::CausalLM& from) {
  auto m = models::build_model(cfg);
  torch::NoGradGuard ng;
  auto theirs = from.named_parameters();
  for (auto& p : m->named_parameters()) p.value().copy_(theirs[p.key()]);
  return m;
}

TEST(BlueLM, ConfigJsonBuildsTheFamily) {
  auto cfg = models::load_model_config(kTiny);
  EXPECT_EQ(cfg.model_type, "BlueLM");
  EXPECT_EQ(models::family_for(cfg).name, "bluelm");
  EXPECT_TRUE(cfg.embed_layer_norm);
  EXPECT_EQ(cfg.rope_scaling.type, "");
  EXPECT_EQ(cfg.num_key_value_heads, cfg.num_attention_heads);
  EXPECT_EQ(cfg.rms_norm_eps, 1e-6);
  EXPECT_EQ(models::default_template("BlueLM", [](const std::string&) { return false; }), "bluelm");
  auto model = models::load_pretrained(kTiny);
  auto params = model->named_parameters();
  ASSERT_TRUE(params.contains("model.embed_layer_norm.weight"));
  ASSERT_TRUE(params.contains("model.embed_layer_norm.bias"));
  // The LayerNorm's weights run in the embedding unit (ZeRO-3 gathers them with it).
  auto units = model->unit_prefixes();
  EXPECT_EQ(units[0], (std::vector<std::string>{"model.embed_tokens.", "model.embed_layer_norm."}));

  auto j = tiny_json();
  j.erase("use_stable_embedding");  // BlueLMConfig's default: true
  EXPECT_TRUE(models::parse_model_config(j, "/m/config.json").embed_layer_norm);
  j["use_stable_embedding"] = false;
  auto plain = models::parse_model_config(j, "/m/config.json");
  EXPECT_FALSE(plain.embed_layer_norm);
  EXPECT_FALSE(models::build_model(plain)->named_parameters().contains("model.embed_layer_norm.weight"));

  j = tiny_json();
  j["rope_scaling"] = {{"type", "ntkmixed"}, {"factor", 16.0}, {"power", 0.3}};
  auto scaled = models::parse_model_config(j, "/m/config.json");
  EXPECT_EQ(scaled.rope_scaling.type, "ntkmixed");
  EXPECT_EQ(scaled.rope_scaling.factor, 16.0);
  EXPECT_EQ(scaled.rope_scaling.power, 0.3);
}

TEST(BlueLM, RopeScalingOtherThanNtkMixedIsRefusedNamingTheKey) {
  auto err = [](const nlohmann::json& rs) {
    auto j = tiny_json();
    j["rope_scaling"] = rs;
    return error_of([&] { models::parse_model_config(j, "/m/config.json"); });
  };
  EXPECT_EQ(err({{"type", "dynamic"}, {"factor", 16.0}, {"power", 0.3}}),
            "/m/config.json: rope_scaling type \"dynamic\" is not supported for BlueLM (expected \"ntkmixed\", "
            "BlueLM-7B-Chat-32K's; vivo's linear and dynamic variants are used by no released checkpoint)");
  EXPECT_NE(err({{"type", "yarn"}, {"factor", 16.0}, {"power", 0.3}}).find("rope_scaling type \"yarn\" is not supported"),
            std::string::npos);
  EXPECT_EQ(err({{"type", "ntkmixed"}, {"factor", 16.0}, {"power", 0.3}, {"original_max_position_embeddings", 2048}}),
            "/m/config.json: rope_scaling key 'original_max_position_embeddings' is not supported for BlueLM "
            "(expected exactly type \"ntkmixed\", factor and power)");
  EXPECT_EQ(err({{"rope_type", "ntkmixed"}, {"factor", 16.0}, {"power", 0.3}}).find("rope_scaling key 'rope_type'"),
            size_t(16));
  EXPECT_NE(err({{"type", "ntkmixed"}, {"factor", 16.0}}).find("rope_scaling is missing 'power'"), std::string::npos);
  EXPECT_NE(err({{"type", "ntkmixed"}, {"factor", 1.0}, {"power", 0.3}}).find("'factor' must be a number >= 2"),
            std::string::npos);
  EXPECT_NE(err({{"type", "ntkmixed"}, {"factor", 16.0}, {"power", "x"}}).find("'power' must be a positive number"),
            std::string::npos);
  EXPECT_NE(err(nlohmann::json::array()).find("'rope_scaling' must be an object or null"), std::string::npos);
  auto j = tiny_json();
  j["attention_bias"] = true;
  EXPECT_NE(error_of([&] { models::parse_model_config(j, "/m/config.json"); }).find("'attention_bias' is not a BlueLMConfig key"),
            std::string::npos);
}

// BlueLM-7B-Chat-32K's frequencies (head_dim 128, theta 10000, factor 16, power 0.3) against
// hand-derived values: a = ln 16 / 64^0.3 = 0.796217026080042 and lambda_j = exp(a * j^0.3),
// lambda_1 = 2.2171376698777805, lambda_2 = 2.665144142690225, lambda_32 = 9.50712800665247,
// lambda_64 = 16 (docs/decisions.md "BlueLM"; the formula of vivo's vLLM port).
TEST(BlueLM, NtkMixedInvFreqEqualsHandDerivedValues) {
  models::ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 10000.0;
  auto plain = models::rope_inv_freq(c);
  c.rope_scaling.type = "ntkmixed";
  c.rope_scaling.factor = 16.0;
  c.rope_scaling.power = 0.3;
  auto inv = models::rope_inv_freq(c).to(torch::kDouble);
  ASSERT_EQ(inv.numel(), 64);
  auto base = [](int j) { return std::pow(10000.0, -2.0 * j / 128.0); };
  const std::vector<std::pair<int, double>> lambda = {
      {0, 2.2171376698777805}, {1, 2.665144142690225}, {31, 9.50712800665247}, {63, 16.0}};
  for (auto [j, l] : lambda)
    EXPECT_NEAR(inv[j].item<double>() / (base(j) / l), 1.0, 2e-6) << "frequency " << j;
  EXPECT_NEAR(inv[0].item<double>(), 0.45103, 1e-5);
  EXPECT_NEAR(inv[63].item<double>(), 7.2174e-06, 1e-9);
  const double a = std::log(16.0) / std::pow(64.0, 0.3);
  EXPECT_NEAR(a, 0.796217026080042, 1e-15);
  for (int j = 0; j < 64; ++j)
    EXPECT_NEAR(inv[j].item<double>() / (base(j) / std::exp(a * std::pow(j + 1.0, 0.3))), 1.0, 2e-6) << j;
  // Without scaling: the plain 1 / theta^(2j/d).
  for (int j = 0; j < 64; ++j) EXPECT_NEAR(plain[j].item<double>() / base(j), 1.0, 2e-6) << j;
}

TEST(BlueLM, LogitsEqualTheReferenceAndTheLayerNormMatters) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  Scratch s("logits");
  Logits ref;
  ASSERT_NO_FATAL_FAILURE(ref = ref_logits(s.dir, kTiny));
  auto model = models::load_pretrained(kTiny);
  EXPECT_LT(worst_logits_diff(*model, ref, "base"), 1e-5);
  auto cfg = model->config();
  cfg.embed_layer_norm = false;
  EXPECT_GT(worst_logits_diff(*with_weights_of(cfg, *model), ref, "base"), 1e-3) << "the LayerNorm changes nothing";
}

// NEFTune's hook (HF's forward hook on embed_tokens) acts before the LayerNorm: a hook adding
// the same constant to every feature changes nothing (the LayerNorm removes the mean), while
// one adding a per-feature ramp does.
TEST(BlueLM, EmbeddingHookRunsBeforeTheLayerNorm) {
  auto model = models::load_pretrained(kTiny);
  model->eval();
  torch::NoGradGuard ng;
  auto ids = torch::randint(model->config().vocab_size, {2, 12}, torch::kLong);
  auto plain = model->forward(ids, {});
  model->set_embedding_hook([](const at::Tensor& x) { return x + 1.0; });
  auto shifted = model->forward(ids, {});
  EXPECT_LT((shifted - plain).abs().max().item<double>(), 1e-3);
  model->set_embedding_hook([](const at::Tensor& x) { return x + torch::linspace(0, 1, x.size(-1)); });
  auto ramped = model->forward(ids, {});
  EXPECT_GT((ramped - plain).abs().max().item<double>(), 1e-2);
  model->set_embedding_hook(nullptr);
}

// BlueLM-7B-Chat-32K's scaling on the tiny model (head_dim 16): the reference's inv_freq and
// logits, and KV-cached decoding (forward_cached applies the LayerNorm too).
TEST(BlueLM, NtkMixedLogitsAndCachedDecodingEqualTheReference) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  Scratch s("ntkmixed");
  auto dir = copy_with_rope_scaling(s.dir, {{"type", "ntkmixed"}, {"factor", 16.0}, {"power", 0.3}});
  Logits ref;
  ASSERT_NO_FATAL_FAILURE(ref = ref_logits(s.dir, dir));
  auto model = models::load_pretrained(dir);
  ASSERT_EQ(model->config().rope_scaling.type, "ntkmixed");
  auto theirs_inv = st::File::open(ref.file.string())->get("inv_freq");
  auto ours_inv = models::rope_inv_freq(model->config());
  ASSERT_EQ(ours_inv.sizes(), theirs_inv.sizes());
  EXPECT_TRUE(torch::equal(ours_inv, theirs_inv)) << ours_inv << theirs_inv;
  EXPECT_LT(worst_logits_diff(*model, ref, "base"), 1e-5);
  auto cfg = model->config();
  cfg.rope_scaling = models::RopeScaling();
  EXPECT_GT(worst_logits_diff(*with_weights_of(cfg, *model), ref, "base"), 1e-3) << "the scaling changes nothing";

  // The 48-token row: a 10-token prompt, then one token per step.
  EXPECT_LT(ftrun::testing::worst_cached_decoding_diff(*model, ref, "base", 1, 10), 1e-5);
}

// Every weight moved (the LayerNorm's weight and bias far from 1 and 0), saved as full SFT
// saves: the reference reads the file and gives ftrun's logits.
TEST(BlueLM, FullSaveGivesTheReferenceTheSameLogits) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  Scratch s("full");
  auto model = models::load_pretrained(kTiny);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(9);
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
    auto params = model->named_parameters();
    params["model.embed_layer_norm.weight"].mul_(1.5);
    params["model.embed_layer_norm.bias"].add_(torch::randn_like(params["model.embed_layer_norm.bias"]) * 0.5);
  }
  models::save_pretrained(*model, (s.dir / "full").string());
  Logits ref;
  ASSERT_NO_FATAL_FAILURE(ref = ref_logits(s.dir, (s.dir / "full").string()));
  EXPECT_LT(worst_logits_diff(*model, ref, "base"), 1e-5);
  EXPECT_GT(worst_logits_diff(*models::load_pretrained(kTiny), ref, "base"), 1e-3) << "the change did not reach the file";
}

// The seed's LoRA targets (every projection), B random: PEFT loads ftrun's adapter key for key
// on the reference model and gives ftrun's logits.
TEST(BlueLM, LoraAdapterLoadsInPeftWithTheSameLogits) {
  ASSERT_NO_FATAL_FAILURE(require_pyref());
  Scratch s("lora");
  auto model = models::load_pretrained(kTiny);
  const nlohmann::json peft_cfg = {
      {"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0},
      {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
  torch::manual_seed(7);
  auto strategy = peft::make_strategy(peft_cfg);
  strategy->apply(*model);
  {
    torch::NoGradGuard ng;
    for (auto& kv : strategy->trainable())
      if (kv.first.find("lora_B") != std::string::npos) kv.second.normal_(0, 0.05);
  }
  EXPECT_EQ(strategy->trainable().size(), size_t(2 * 7 * 2)) << "lora_A and lora_B on 7 targets in 2 layers";
  strategy->save((s.dir / "adapter").string(), kTiny);
  Logits ref;
  ASSERT_NO_FATAL_FAILURE(ref = ref_logits(s.dir, kTiny, (s.dir / "adapter").string()));
  EXPECT_LT(worst_logits_diff(*model, ref, "adapter"), 1e-5);
  EXPECT_GT(worst_logits_diff(*model, ref, "base"), 1e-3) << "the adapter changes nothing";
}

}  // namespace
