// DoRA (peft_config.use_dora) held to the REAL PEFT 0.14 + transformers 4.49 (the venv
// build/pyref, .ci/install-pyref; without it these tests fail naming that command):
//   - ftrun's initial magnitude vectors equal get_peft_model's, name for name and bit for bit,
//     on an fp32 and on a bf16-held base (tests/reference/hf_ref.py dora-init);
//   - training from the same start adapter (random B, magnitudes away from the norms) on the
//     embedded tiny Qwen2 (biased q/k/v): every step's loss within 1e-5 relative of PEFT's
//     (tests/reference/hf_train_ref.py, which builds DoRA layers from the adapter's config),
//     in one process, and on 2 ranks (gloo, loopback) at ZeRO stages 0-3, where each rank
//     takes one of the step's two micro-batches;
//   - a bf16-held base trains within 1% of PEFT on a bf16 base (bf16's own rounding);
//   - the adapter trained at ZeRO-3 loads in PEFT key for key with ftrun's logits;
//   - with lora_dropout (no PEFT here: its masks come from another generator stream), ZeRO-3's
//     and gradient checkpointing's recomputes replay DoRA's dropout: the same losses and
//     weights as stage 0 in one process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "comm/comm.h"
#include "comm/rank_info.h"
#include "comm/rendezvous.h"
#include "models/model.h"
#include "models/safetensors.h"
#include "peft/strategy.h"
#include "runtime/trainer.h"
#include "testing/ranks.h"
#include "tests/parity/reference_io.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

const std::string kPyref = ftrun::testing::pyref_python();
const std::string kRefDir = FTRUN_SOURCE_DIR "/tests/reference/";
const std::string kModel = FTRUN_SOURCE_DIR "/examples/tiny/qwen2-model";
constexpr int kSteps = 5, kAccum = 2;
constexpr double kLr = 5e-3, kDecay = 0.1;
const nlohmann::json kTargets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

using ftrun::testing::run_logged;

nlohmann::json peft_cfg() {
  return {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", 4},          {"lora_alpha", 8},
          {"lora_dropout", 0.0}, {"target_modules", kTargets}, {"use_dora", true}};
}

nlohmann::json rows(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  auto c = t.contiguous();
  for (int64_t i = 0; i < c.size(0); ++i) {
    auto r = c[i];
    out.push_back(std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel()));
  }
  return out;
}

// kSteps x kAccum micro-batches of [2, 12] random ids, right padding of varied length
// (labels -100 there and on the first two positions).
nlohmann::json make_data() {
  torch::manual_seed(21);
  nlohmann::json out = {{"batches", nlohmann::json::array()}};
  for (int i = 0; i < kSteps * kAccum; ++i) {
    auto ids = torch::randint(0, 400, {2, 12}, torch::kLong);
    auto mask = torch::ones({2, 12}, torch::kLong);
    int pad = i % 4;
    if (pad > 0) {
      mask[1].narrow(0, 12 - pad, pad).fill_(0);
      ids[1].narrow(0, 12 - pad, pad).fill_(400);
    }
    auto labels = ids.masked_fill(mask == 0, -100);
    labels.narrow(1, 0, 2).fill_(-100);
    out["batches"].push_back({{"input_ids", rows(ids)}, {"attention_mask", rows(mask)}, {"labels", rows(labels)}});
  }
  return out;
}

struct Fixture {
  fs::path dir;
  std::vector<data::Batch> batches;
};

// The data and the start adapter (ftrun's DoRA init, then B random and the magnitudes moved
// off the norms so that m / ||W + sBA|| is not 1), written once per test binary run.
Fixture& fixture() {
  static Fixture f = [] {
    Fixture f;
    f.dir = fs::temp_directory_path() / ("ftrun_dora_parity_" + std::to_string(getpid()));
    fs::remove_all(f.dir);
    fs::create_directories(f.dir);
    auto data = make_data();
    std::ofstream(f.dir / "data.json") << data.dump();
    f.batches = ftrun::testing::load_reference_batches(data);
    auto model = models::load_pretrained(kModel);
    torch::manual_seed(7);
    auto s = peft::make_strategy(peft_cfg());
    s->apply(*model);
    {
      torch::NoGradGuard ng;
      for (auto& kv : s->trainable()) {
        if (kv.first.find("lora_B") != std::string::npos) kv.second.normal_(0, 0.05);
        if (kv.first.find("lora_magnitude_vector") != std::string::npos)
          kv.second.mul_(1 + 0.1 * torch::randn(kv.second.sizes()));
      }
    }
    s->save((f.dir / "start").string(), kModel);
    return f;
  }();
  // Removed when the test binary (or a rank of it) exits.
  static struct Cleanup {
    fs::path dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{f.dir};
  return f;
}

runtime::TrainingArgs train_args() {
  runtime::TrainingArgs args;
  args.learning_rate = kLr;
  args.warmup_steps = 0;
  args.weight_decay = kDecay;
  args.max_grad_norm = 1.0;
  return args;
}

// PEFT's per-step losses on the fixture (dtype float32 or bfloat16).
std::vector<double> peft_losses(const std::string& dtype) {
  auto& f = fixture();
  auto out = f.dir / ("peft_" + dtype + ".json");
  if (!fs::exists(out)) {
    ftrun::testing::require_pyref();
    run_logged(kPyref + " " + kRefDir + "hf_train_ref.py --model " + kModel + " --adapter " + (f.dir / "start").string() +
                   " --data " + (f.dir / "data.json").string() + " --out " + out.string() + " --grad-accum 2" +
                   " --lr " + std::to_string(kLr) + " --weight-decay " + std::to_string(kDecay) + " --dtype " + dtype,
               f.dir / ("peft_" + dtype + ".log"));
  }
  nlohmann::json j;
  std::ifstream(out) >> j;
  EXPECT_EQ(j.value("use_dora", false), true) << "PEFT did not build DoRA layers from the start adapter";
  EXPECT_EQ(j.value("trainable_tensors", 0), 3 * 7 * 2) << "lora_A, lora_B, lora_magnitude_vector x 7 x 2 layers";
  std::vector<double> losses;
  for (const auto& v : j["loss_per_step"]) losses.push_back(v.get<double>());
  return losses;
}

// ftrun's per-step losses: `comm` null = one process taking both micro-batches of a step,
// else rank r takes micro-batch r. `final_dir`: the trained adapter is saved there (rank 0).
std::vector<double> ftrun_losses(at::ScalarType dtype, std::shared_ptr<comm::Comm> comm = nullptr, int stage = 0,
                                 const fs::path& final_dir = {}, double dropout = 0.0, bool checkpointing = false,
                                 std::vector<at::Tensor>* final_weights = nullptr) {
  auto& f = fixture();
  auto model = models::load_pretrained(kModel, dtype);
  auto cfg = peft_cfg();
  cfg["lora_dropout"] = dropout;
  auto s = peft::make_strategy(cfg);
  s->apply(*model);
  s->load((f.dir / "start").string());
  auto args = train_args();
  args.gradient_checkpointing = checkpointing;
  torch::manual_seed(3);  // dropout's stream
  model->train();
  runtime::Stepper stepper(*model, s->trainable(), args, kSteps, comm, stage);
  std::vector<double> losses;
  for (int k = 0; k < kSteps; ++k) {
    std::vector<data::Batch> micro;
    if (!comm) {
      for (int j = 0; j < kAccum; ++j) micro.push_back(f.batches[size_t(k * kAccum + j)]);
    } else {
      micro.push_back(f.batches[size_t(k * kAccum + comm->rank())]);
    }
    losses.push_back(stepper.step(micro).loss);
  }
  if (!final_dir.empty())
    stepper.engine().with_full_trainable([&] {
      if (!comm || comm->rank() == 0) s->save(final_dir.string(), kModel);
    });
  if (final_weights)
    stepper.engine().with_full_trainable([&] {
      for (const auto& kv : s->trainable()) final_weights->push_back(kv.second.detach().clone());
    });
  return losses;
}

void expect_within(const std::vector<double>& ours, const std::vector<double>& theirs, double rel, const std::string& what) {
  ASSERT_EQ(ours.size(), theirs.size()) << what;
  double worst = 0;
  for (size_t s = 0; s < ours.size(); ++s) {
    double r = std::abs(ours[s] - theirs[s]) / std::abs(theirs[s]);
    worst = std::max(worst, r);
    EXPECT_LE(r, rel) << what << " step " << s << ": ftrun " << ours[s] << " PEFT " << theirs[s];
  }
  std::cout << what << ": worst relative loss difference over " << ours.size() << " steps " << worst << " (PEFT first "
            << theirs.front() << ", last " << theirs.back() << ")\n";
}

void check_init(const std::string& dtype) {
  ASSERT_NO_FATAL_FAILURE(ftrun::testing::require_pyref());
  auto& f = fixture();
  auto out = f.dir / ("init_" + dtype + ".safetensors");
  ASSERT_NO_FATAL_FAILURE(run_logged(kPyref + " " + kRefDir + "hf_ref.py dora-init --model " + kModel +
                                         " --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" +
                                         " --r 4 --lora-alpha 8 --dtype " + dtype + " --out " + out.string(),
                                     f.dir / ("init_" + dtype + ".log")));
  auto model = models::load_pretrained(kModel, dtype == "bfloat16" ? at::kBFloat16 : at::kFloat);
  auto s = peft::make_strategy(peft_cfg());
  s->apply(*model);
  auto file = st::File::open(out.string());
  size_t n = 0;
  for (const auto& kv : s->trainable()) {
    if (kv.first.find("lora_magnitude_vector") == std::string::npos) continue;
    ++n;
    ASSERT_TRUE(file->contains(kv.first)) << kv.first << " is not a name PEFT gives its magnitude vectors";
    auto theirs = file->get(kv.first);
    EXPECT_EQ(theirs.scalar_type(), at::kFloat) << kv.first;
    EXPECT_TRUE(torch::equal(kv.second, theirs)) << dtype << " " << kv.first << ": max diff "
                                                 << (kv.second - theirs).abs().max().item<double>();
  }
  EXPECT_EQ(n, file->tensors().size());
  EXPECT_EQ(n, 14u);
}

}  // namespace

TEST(DoraParity, InitialMagnitudesEqualPeftsFp32) { check_init("float32"); }
TEST(DoraParity, InitialMagnitudesEqualPeftsOnABf16Base) { check_init("bfloat16"); }

TEST(DoraParity, TrainingStepsMatchPeftInOneProcess) {
  ASSERT_NO_FATAL_FAILURE(ftrun::testing::require_pyref());
  auto theirs = peft_losses("float32");
  auto ours = ftrun_losses(at::kFloat);
  expect_within(ours, theirs, 1e-5, "DoRA fp32, 1 process");
  EXPECT_LT(theirs.back(), theirs.front());  // it learns
}

TEST(DoraParity, Bf16HeldBaseMatchesPeftOnABf16Base) {
  ASSERT_NO_FATAL_FAILURE(ftrun::testing::require_pyref());
  auto theirs = peft_losses("bfloat16");
  auto ours = ftrun_losses(at::kBFloat16);
  expect_within(ours, theirs, 1e-2, "DoRA bf16-held base, 1 process");
  auto fp32 = peft_losses("float32");
  size_t same = 0;
  for (size_t s = 0; s < ours.size(); ++s) same += std::abs(ours[s] - fp32[s]) < 1e-7 * fp32[s];
  EXPECT_LT(same, ours.size()) << "the bf16 run gave the fp32 losses: the base was not bf16";
}

// Two ranks over gloo at every ZeRO stage, each against PEFT; the ZeRO-3 adapter loads in PEFT.
TEST(DoraParity, ZeroStagesOnTwoRanksMatchPeft) {
  ASSERT_NO_FATAL_FAILURE(ftrun::testing::require_pyref());
  auto theirs = peft_losses("float32");
  ftrun::testing::LaunchOptions opts;
  const fs::path dir = ftrun::testing::shared_test_dir("dora_zero", opts);
  opts.timeout = std::chrono::seconds(150);
  opts.kill_all_on_failure = true;
  auto launched = ftrun::testing::run_in_ranks(
      2,
      [&] {
        auto comm = comm::init_comm(comm::detect_rank_info(), "gloo", std::chrono::seconds(60));
        nlohmann::json j;
        for (int stage = 0; stage <= 3; ++stage)
          j[std::to_string(stage)] = ftrun_losses(at::kFloat, comm, stage, stage == 3 ? dir / "zero3-adapter" : fs::path());
        if (comm->rank() == 0) std::ofstream(dir / "losses.json") << j.dump();
      },
      opts);
  ASSERT_TRUE(launched.ok()) << launched.report();
  nlohmann::json got;
  std::ifstream(dir / "losses.json") >> got;
  for (int stage = 0; stage <= 3; ++stage)
    expect_within(got[std::to_string(stage)].get<std::vector<double>>(), theirs, 1e-5,
                  "DoRA fp32, 2 ranks, ZeRO stage " + std::to_string(stage));

  // The adapter trained at ZeRO-3 (gathered for the save) loads in PEFT key for key and gives
  // ftrun's logits.
  auto& f = fixture();
  auto logits = dir / "peft_logits.safetensors";
  ASSERT_NO_FATAL_FAILURE(run_logged(kPyref + " " + kRefDir + "hf_ref.py logits --model " + kModel + " --data " +
                                         (f.dir / "data.json").string() + " --out " + logits.string() + " --adapter " +
                                         (dir / "zero3-adapter").string(),
                                     dir / "peft_logits.log"));
  auto model = models::load_pretrained(kModel);
  auto s = peft::strategy_from_adapter_dir((dir / "zero3-adapter").string());
  s->apply(*model);
  s->load((dir / "zero3-adapter").string());
  model->eval();
  torch::NoGradGuard ng;
  auto file = st::File::open(logits.string());
  for (size_t i = 0; i < f.batches.size(); ++i) {
    auto ours = model->forward(f.batches[i].input_ids, f.batches[i].attention_mask);
    auto mine = file->get("adapter." + std::to_string(i));
    auto valid = f.batches[i].attention_mask.to(torch::kBool).unsqueeze(-1).expand_as(ours);
    double diff = (ours - mine).abs().masked_select(valid).max().item<double>();
    EXPECT_LT(diff, 1e-5) << "micro-batch " << i;
  }
  fs::remove_all(dir);
}

TEST(DoraParity, DropoutIsReplayedByZero3AndCheckpointingRecomputes) {
  std::vector<at::Tensor> w0;
  auto base = ftrun_losses(at::kFloat, nullptr, 0, {}, 0.1, false, &w0);
  auto no_dropout = ftrun_losses(at::kFloat);
  EXPECT_NE(base[0], no_dropout[0]) << "lora_dropout 0.1 changed nothing";
  for (auto [stage, ckpt] : {std::pair<int, bool>{3, false}, {0, true}, {2, true}}) {
    std::vector<at::Tensor> w;
    auto got = ftrun_losses(at::kFloat, nullptr, stage, {}, 0.1, ckpt, &w);
    const std::string what = "stage " + std::to_string(stage) + (ckpt ? " + checkpointing" : "");
    for (size_t k = 0; k < base.size(); ++k) EXPECT_NEAR(got[k], base[k], 1e-6 * base[k]) << what << " step " << k;
    ASSERT_EQ(w.size(), w0.size());
    for (size_t i = 0; i < w.size(); ++i)
      EXPECT_LT(((w[i] - w0[i]).norm() / w0[i].norm()).item<double>(), 1e-5) << what << " tensor " << i;
  }
}
