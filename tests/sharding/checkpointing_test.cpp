// Activation checkpointing (training_args.gradient_checkpointing) in the ZeRO engine: at every
// stage it recomputes each decoder layer in backward and changes nothing else. With and
// without it, per-step loss and grad norm agree to 1e-6 relative (fp32) and so do the final
// trainable weights, for LoRA with dropout (the recompute must replay the same random
// numbers; the embeddings are frozen, so a layer's input needs no grad), P-Tuning v2 (the
// layers have no trainable parameters of their own: the prefix comes in through the prefix
// provider) and full SFT, at stages 0-3 (stage 3 with and without keep_params). The layers
// really are run twice (counted), and stages 2 and 3 also hold at 2 ranks (gloo).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>

#include "comm/rank_info.h"
#include "comm/rendezvous.h"
#include "peft/strategy.h"
#include "runtime/trainer.h"
#include "testing/batches.h"
#include "testing/ranks.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

constexpr int kSteps = 3, kVocab = 37;

models::TinySpec spec(const std::string& family) {
  auto s = ftrun::testing::tiny_spec(kVocab, {}, family);
  s.num_hidden_layers = 3;
  return s;
}

// Micro-batch i of a run (2 per step): right padding and prompt tokens without labels.
data::Batch micro_batch(int i, int64_t rows = 2) {
  torch::manual_seed(500 + i);
  data::Batch b;
  b.input_ids = torch::randint(0, kVocab, {rows, 9}, torch::kLong);
  b.attention_mask = torch::ones({rows, 9}, torch::kLong);
  b.attention_mask[rows - 1].narrow(0, 6, 3).zero_();
  b.labels = b.input_ids.masked_fill(b.attention_mask == 0, -100);
  b.labels.narrow(1, 0, 3).fill_(-100);
  b.num_label_tokens = (b.labels.narrow(1, 1, 8) != -100).sum().item<int64_t>();
  return b;
}

data::Batch rows_of(const data::Batch& g, int64_t from, int64_t n) { return ftrun::testing::slice_rows(g, from, n); }

const nlohmann::json kLora = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"lora_dropout", 0.2},
                               {"target_modules", {"q_proj", "v_proj", "down_proj", "query_key_value", "dense_4h_to_h"}}};
const nlohmann::json kPrefix = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}};

struct Options {
  int stage = 0;
  bool keep = false;
  bool checkpointing = false;
  bool bf16 = false;
  nlohmann::json peft;
  std::string family = "llama";
  int64_t rows = 2;  // rows per rank of every micro-batch
};

struct Run {
  std::vector<double> losses, norms;
  std::vector<at::Tensor> weights;
  int64_t layer_calls = 0;  // decoder-layer unit runs during the training steps
  at::Tensor rng_after;     // the CPU generator's state after training
};

// kSteps optimizer steps of 2 micro-batches each; with a comm, each rank takes its share of
// every micro-batch's rows.
Run train(const Options& o, std::shared_ptr<comm::Comm> comm = nullptr) {
  auto m = ftrun::testing::make_tiny_model({spec(o.family), 7, 0.2});
  auto s = peft::make_strategy(o.peft);
  torch::manual_seed(3);
  s->apply(*m);
  if (!o.peft.is_null()) {  // LoRA's B starts at zero: give every adapter tensor a gradient
    torch::NoGradGuard ng;
    for (auto& kv : s->trainable()) kv.second.add_(torch::randn(kv.second.sizes()) * 0.05);
  }
  Run r;
  // The model calls the prefix provider once inside every decoder-layer unit run; without a
  // prefix strategy, a provider that adds nothing counts those runs.
  if (o.peft.is_null() || o.peft["peft_type"] != "PREFIX_TUNING")
    m->set_prefix_provider([&r](int64_t, int64_t) {
      ++r.layer_calls;
      return std::make_pair(at::Tensor(), at::Tensor());
    });
  runtime::TrainingArgs args;
  args.learning_rate = 2e-2;
  args.weight_decay = 0.1;
  args.max_grad_norm = 0.5;
  args.gradient_checkpointing = o.checkpointing;
  args.bf16 = o.bf16;
  auto trainable = s->trainable();
  runtime::Stepper st(*m, trainable, args, kSteps, comm, o.stage, o.keep);
  int world = comm ? comm->world_size() : 1, rank = comm ? comm->rank() : 0;
  std::vector<std::vector<data::Batch>> steps(kSteps);
  for (int k = 0; k < kSteps; ++k)
    for (int i = 0; i < 2; ++i)
      steps[size_t(k)].push_back(rows_of(micro_batch(2 * k + i, o.rows * world), o.rows * rank, o.rows));
  // Dropout draws from here on, one stream through all steps: a recompute that left the
  // generator elsewhere would change every later mask.
  torch::manual_seed(11);
  for (const auto& mbs : steps) {
    auto stats = st.step(mbs);
    r.losses.push_back(stats.loss);
    r.norms.push_back(stats.grad_norm);
  }
  r.rng_after = at::detail::getDefaultCPUGenerator().get_state();
  int64_t during_training = r.layer_calls;
  st.engine().with_full_trainable([&] {
    for (const auto& kv : trainable) r.weights.push_back(kv.second.detach().clone());
  });
  // Evaluation (no grad) runs each layer once and sees the trained weights.
  torch::NoGradGuard ng;
  m->eval();
  auto logits = m->forward(micro_batch(0).input_ids, micro_batch(0).attention_mask);
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  if (r.layer_calls > 0) {
    EXPECT_EQ(r.layer_calls - during_training, 3);
  }
  r.layer_calls = during_training;
  return r;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

void expect_same(const Run& got, const Run& ref, const std::string& what, double tol = 1e-6) {
  ASSERT_EQ(got.losses.size(), ref.losses.size());
  for (size_t k = 0; k < ref.losses.size(); ++k) {
    EXPECT_LT(rel(got.losses[k], ref.losses[k]), tol) << what << " step " << k << ": loss " << got.losses[k]
                                                      << " vs " << ref.losses[k];
    EXPECT_LT(rel(got.norms[k], ref.norms[k]), tol) << what << " step " << k << ": grad norm " << got.norms[k]
                                                    << " vs " << ref.norms[k];
  }
  ASSERT_EQ(got.weights.size(), ref.weights.size()) << what;
  for (size_t i = 0; i < ref.weights.size(); ++i) {
    double d = ((got.weights[i] - ref.weights[i]).norm() / ref.weights[i].norm()).item<double>();
    EXPECT_LT(d, tol) << what << " tensor " << i << " max diff "
                      << (got.weights[i] - ref.weights[i]).abs().max().item<double>();
  }
}

// At one stage: checkpointing off and on agree, and on runs every decoder layer twice per
// micro-batch (forward, then recompute) where off runs it once (stage 3 without keep_params
// recomputes anyway). The dropout stream continues exactly as without checkpointing.
void check_stage(Options o, const std::string& name) {
  o.checkpointing = false;
  auto off = train(o);
  o.checkpointing = true;
  auto on = train(o);
  expect_same(on, off, name);
  EXPECT_TRUE(torch::equal(on.rng_after, off.rng_after)) << name << ": the generator ended elsewhere";
  EXPECT_GT(off.norms[0], 0) << name;
  if (o.peft.is_null() || o.peft["peft_type"] != "PREFIX_TUNING") {
    const int64_t once = int64_t(kSteps) * 2 * 3;  // steps x micro-batches x layers
    const bool recomputes_anyway = o.stage == 3 && !o.keep;
    EXPECT_EQ(off.layer_calls, recomputes_anyway ? 2 * once : once) << name;
    EXPECT_EQ(on.layer_calls, 2 * once) << name;
  }
}

}  // namespace

TEST(GradientCheckpointing, LoraWithDropoutEveryStage) {
  for (int stage : {0, 1, 2, 3}) check_stage({stage, false, false, false, kLora}, "lora stage " + std::to_string(stage));
  check_stage({3, true, false, false, kLora}, "lora stage 3 keep_params");
}

TEST(GradientCheckpointing, LoraOnGlm4) {
  for (int stage : {0, 2}) check_stage({stage, false, false, false, kLora, "glm4"}, "glm4 lora stage " + std::to_string(stage));
  check_stage({3, true, false, false, kLora, "glm4"}, "glm4 lora stage 3 keep_params");
}

TEST(GradientCheckpointing, PrefixTuningEveryStage) {
  for (int stage : {0, 1, 2, 3})
    check_stage({stage, false, false, false, kPrefix}, "prefix stage " + std::to_string(stage));
  check_stage({3, true, false, false, kPrefix}, "prefix stage 3 keep_params");
}

TEST(GradientCheckpointing, FullParametersEveryStage) {
  for (int stage : {0, 1, 2, 3})
    check_stage({stage, false, false, false, nullptr}, "full stage " + std::to_string(stage));
  check_stage({3, true, false, false, nullptr}, "full stage 3 keep_params");
}

TEST(GradientCheckpointing, RecomputeKeepsBf16Autocast) {
  // bf16: true runs the forward under CPU autocast and backward outside it: the recompute
  // must re-enter the forward's autocast state, or it would differ from the forward it
  // replaces (and stage 3's recompute would not match stage 0).
  Options o{0, false, false, true, kLora};
  auto off = train(o);
  o.checkpointing = true;
  expect_same(train(o), off, "bf16 lora stage 0", 1e-5);
  o.stage = 3;
  o.keep = true;
  expect_same(train(o), off, "bf16 lora stage 3 keep_params", 1e-5);
  o.keep = false;
  expect_same(train(o), off, "bf16 lora stage 3 recompute", 1e-5);
}

namespace {

const nlohmann::json kLoraNoDropout = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4},
                                        {"target_modules", {"q_proj", "v_proj", "down_proj", "gate_proj"}}};

// 2 ranks (gloo) with checkpointing against 1 rank without it over the same global
// micro-batches: the grads of the recomputed layers reach the stage's reduction (stage 2's
// and keep_params' hooks fire inside the recompute's backward). Each rank would draw its own
// dropout masks, so dropout is off here; reduction order across ranks allows 1e-5.
void check_two_ranks(int stage, bool keep) {
  auto name = "gc_s" + std::to_string(stage) + (keep ? "_keep" : "");
  ftrun::testing::LaunchOptions opts;
  const fs::path dir = ftrun::testing::shared_test_dir(name, opts);
  opts.timeout = std::chrono::seconds(90);
  opts.kill_all_on_failure = true;
  auto launched = ftrun::testing::run_in_ranks(2, [&] {
    auto comm = comm::init_comm(comm::detect_rank_info(), "gloo", std::chrono::seconds(30));
    auto r = train({stage, keep, true, false, kLoraNoDropout}, comm);
    if (comm->rank() == 0) {
      std::ofstream(dir / "result.json") << nlohmann::json{{"losses", r.losses}, {"norms", r.norms}}.dump();
      torch::save(r.weights, (dir / "weights.pt").string());
    }
  }, opts);
  ASSERT_TRUE(launched.ok()) << launched.report();
  Run got;
  nlohmann::json j;
  std::ifstream(dir / "result.json") >> j;
  got.losses = j["losses"].get<std::vector<double>>();
  got.norms = j["norms"].get<std::vector<double>>();
  torch::load(got.weights, (dir / "weights.pt").string());
  fs::remove_all(dir);
  // One rank takes the whole global micro-batches (4 rows).
  Options one{0, false, false, false, kLoraNoDropout};
  one.rows = 4;
  auto ref = train(one);
  expect_same(got, ref, name, 1e-5);
}

}  // namespace

TEST(GradientCheckpointing, Stage2TwoRanks) { check_two_ranks(2, false); }
TEST(GradientCheckpointing, Stage3KeepParamsTwoRanks) { check_two_ranks(3, true); }
TEST(GradientCheckpointing, Stage3TwoRanks) { check_two_ranks(3, false); }
