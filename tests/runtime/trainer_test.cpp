// The training loop's parts: LR schedules (HF formulas), AdamW (against libtorch's own
// torch::optim::AdamW), clipping, loss averaging under gradient accumulation, and a short
// overfit run through the whole `train()` path on the shipped sample data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/tokenizer.h"
#include "models/tiny.h"
#include "peft/strategy.h"
#include "runtime/config.h"
#include "runtime/pretrain.h"
#include "runtime/schedule.h"
#include "runtime/trainer.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;

TEST(Schedule, LinearWithWarmupMatchesHf) {
  // get_linear_schedule_with_warmup(warmup=2, total=10), base 1e-3: lr_lambda(s) =
  // s/2 for s < 2, else (10 - s)/8.
  runtime::Schedule s{"linear", 2, 10, 1e-3};
  const double want[] = {0, 0.5e-3, 1e-3, 0.875e-3, 0.75e-3, 0.625e-3, 0.5e-3, 0.375e-3, 0.25e-3, 0.125e-3, 0};
  for (int i = 0; i <= 10; ++i) EXPECT_NEAR(s.lr(i), want[i], 1e-15) << i;
}

TEST(Schedule, CosineConstantAndWarmupRatio) {
  runtime::Schedule c{"cosine", 0, 4, 1.0};
  EXPECT_NEAR(c.lr(0), 1.0, 1e-12);
  EXPECT_NEAR(c.lr(1), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_NEAR(c.lr(2), 0.5, 1e-12);
  EXPECT_NEAR(c.lr(4), 0.0, 1e-12);
  runtime::Schedule k{"constant_with_warmup", 4, 100, 2.0};
  EXPECT_NEAR(k.lr(1), 0.5, 1e-12);
  EXPECT_NEAR(k.lr(50), 2.0, 1e-12);
  EXPECT_EQ(runtime::warmup_steps_for(0, 0.1, 95), 10);  // ceil(9.5)
  EXPECT_EQ(runtime::warmup_steps_for(3, 0.1, 95), 3);
}

namespace {

std::shared_ptr<models::CausalLM> small_model() {
  return ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(30), 11});
}

data::Sample sample(std::vector<int64_t> ids, int64_t prompt) {
  data::Sample s{ids, ids};
  for (int64_t i = 0; i < prompt; ++i) s.labels[size_t(i)] = -100;
  return s;
}

}  // namespace

TEST(Trainer, AccumulationAveragesOverAllLabelTokensOfTheStep) {
  // Two micro-batches of 1 with accumulation 2 must give the same update as one batch of 2,
  // even though the samples hold different numbers of label tokens.
  std::vector<data::Sample> samples = {sample({1, 2, 3, 4, 5, 6, 7}, 2), sample({8, 9, 10, 11}, 3)};
  nlohmann::json lora = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"q_proj", "down_proj"}}};
  runtime::TrainingArgs args;
  args.learning_rate = 1e-2;
  auto run = [&](int64_t accum) {
    auto m = small_model();
    auto s = peft::make_strategy(lora);
    torch::manual_seed(3);
    s->apply(*m);
    {
      torch::NoGradGuard ng;  // non-zero B so every parameter gets a gradient
      for (auto& kv : s->trainable()) kv.second.add_(torch::randn(kv.second.sizes()) * 0.1);
    }
    args.gradient_accumulation_steps = accum;
    runtime::Stepper st(*m, s->trainable(), args, 3);
    std::vector<runtime::StepStats> out;
    for (int k = 0; k < 3; ++k) {
      std::vector<data::Batch> micro;
      if (accum == 1) micro.push_back(data::collate({&samples[0], &samples[1]}, 0));
      else for (auto& smp : samples) micro.push_back(data::collate({&smp}, 0));
      out.push_back(st.step(micro));
    }
    return std::make_pair(out, s->trainable()[0].second.clone());
  };
  auto [one, w1] = run(1);
  auto [two, w2] = run(2);
  for (int k = 0; k < 3; ++k) {
    EXPECT_NEAR(one[size_t(k)].loss, two[size_t(k)].loss, 1e-5);
    EXPECT_NEAR(one[size_t(k)].grad_norm, two[size_t(k)].grad_norm, 1e-5);
    EXPECT_EQ(one[size_t(k)].label_tokens, 6 + 1 - 1);
  }
  EXPECT_TRUE(torch::allclose(w1, w2, 1e-5, 1e-6));
}

namespace {

// A tokenizer and tiny pre-trained Llama made once per test process, as make-tiny-model does:
// a LoRA fine-tune needs a base that models text (frozen random norms and head cap the
// logits near uniform).
const fs::path& tiny_base() {
  static fs::path dir = [] {
    auto d = fs::temp_directory_path() / ("ftrun_trainer_base_" + std::to_string(getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    data::train_tokenizer(FTRUN_SOURCE_DIR "/examples/tiny/tokenizer_corpus.txt", d.string(), 320,
                          {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"});
    auto tok = data::load_tokenizer(d.string());
    models::TinySpec spec;
    spec.vocab_size = tok->vocab_size();
    spec.hidden_size = 48;
    spec.intermediate_size = 96;
    spec.num_attention_heads = 4;
    spec.num_key_value_heads = 2;
    spec.eos_token_id = tok->special_id("<|eot_id|>");
    spec.pad_token_id = tok->special_id("<|end_of_text|>");
    models::write_tiny_model(d.string(), spec);
    auto base = models::load_pretrained(d.string());
    runtime::PretrainOptions pre;
    pre.steps = 150;
    double pre_loss = runtime::pretrain_on_text(*base, *tok, FTRUN_SOURCE_DIR "/examples/tiny/tokenizer_corpus.txt",
                                                tok->special_id("<|begin_of_text|>"), pre);
    EXPECT_LT(pre_loss, 3.0);
    models::save_pretrained(*base, d.string());
    std::atexit([] { fs::remove_all(fs::temp_directory_path() / ("ftrun_trainer_base_" + std::to_string(getpid()))); });
    return d;
  }();
  return dir;
}

// A run directory with the first `records` training records and a config around them.
fs::path run_dir(const std::string& name, int records, const std::string& training_args, const std::string& peft) {
  auto dir = fs::temp_directory_path() / ("ftrun_run_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ifstream in(FTRUN_SOURCE_DIR "/examples/tiny/train.jsonl");
  std::ofstream out(dir / "train.jsonl");
  std::string line;
  for (int i = 0; i < records && std::getline(in, line); ++i) out << line << "\n";
  out.close();
  std::ofstream(dir / "cfg.yaml") << "model_dir: " << tiny_base().string() << "\n"
                                  << "data_dir: " << dir.string() << "\n"
                                  << "chat_template: llama3\n"
                                  << "data_config: {train_file: train.jsonl}\n"
                                  << "max_input_length: 64\nmax_output_length: 64\n"
                                  << "training_args:\n  output_dir: " << (dir / "out").string() << "\n"
                                  << training_args << peft;
  return dir;
}

}  // namespace

TEST(Trainer, ShortOverfitRunOnSampleDataDropsLoss) {
  // The whole path of `ftrun CONFIG.yaml`: the shared sample data, LoRA, logs, checkpoint,
  // final adapter. 16 training records seen 50 times each: the loss must fall far below
  // its start.
  auto dir = run_dir("overfit", 16,
                     "  max_steps: 100\n  learning_rate: 1.0e-2\n  per_device_train_batch_size: 8\n"
                     "  logging_steps: 10\n  save_steps: 50\n  save_total_limit: 1\n",
                     "peft_config: {peft_type: LORA, r: 8, lora_alpha: 16, lora_dropout: 0.0,\n"
                     "  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}\n");
  auto cfg = runtime::load_config((dir / "cfg.yaml").string());
  auto summary = runtime::train(cfg, /*verbose=*/false);
  ASSERT_EQ(summary.steps.size(), 100u);
  double first = summary.steps.front().loss, last = summary.steps.back().loss;
  EXPECT_GT(first, 1.5);
  EXPECT_LT(last, 1.0) << "first " << first;
  EXPECT_LT(last, 0.3 * first);

  // Metrics file: one record per logging step with the HF keys.
  std::ifstream metrics(dir / "out" / "metrics.jsonl");
  std::string line;
  int records = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"step", "loss", "learning_rate", "grad_norm"}) EXPECT_TRUE(j.contains(k)) << k;
    ++records;
  }
  EXPECT_EQ(records, 10);
  // save_total_limit 1 keeps only checkpoint-100; the final adapter sits in output_dir.
  EXPECT_FALSE(fs::exists(dir / "out" / "checkpoint-50"));
  EXPECT_TRUE(fs::exists(dir / "out" / "checkpoint-100" / "COMPLETE"));
  EXPECT_TRUE(fs::exists(dir / "out" / "checkpoint-100" / "adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out" / "checkpoint-100" / "tokenizer.model"));
  EXPECT_TRUE(fs::exists(dir / "out" / "adapter_config.json"));
  fs::remove_all(dir);
}

TEST(Trainer, FullSftUnderZero3StreamsTheSameModelAsStage0) {
  // The ZeRO-3 save writes one shard per unit (never the whole model gathered); the files
  // must hold exactly the weights a stage-0 run of the same data produces.
  std::string args = "  max_steps: 4\n  learning_rate: 1.0e-3\n  per_device_train_batch_size: 4\n  save_strategy: \"no\"\n";
  auto d0 = run_dir("sft0", 8, args, "zero_stage: 0\n");
  auto d3 = run_dir("sft3", 8, args, "zero_stage: 3\n");
  auto s0 = runtime::train(runtime::load_config((d0 / "cfg.yaml").string()), false);
  auto s3 = runtime::train(runtime::load_config((d3 / "cfg.yaml").string()), false);
  for (size_t k = 0; k < s0.steps.size(); ++k) EXPECT_NEAR(s0.steps[k].loss, s3.steps[k].loss, 1e-5);
  EXPECT_TRUE(fs::exists(d0 / "out" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(d3 / "out" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(d3 / "out" / "model-00001-of-00004.safetensors"));
  auto a = models::load_pretrained((d0 / "out").string());
  auto b = models::load_pretrained((d3 / "out").string());
  auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters())
    EXPECT_TRUE(torch::allclose(p.value(), pb[p.key()], 1e-5, 1e-6)) << p.key();
  auto base = models::load_pretrained(tiny_base().string());
  EXPECT_FALSE(torch::equal(base->named_parameters()["model.norm.weight"], a->named_parameters()["model.norm.weight"]));
  fs::remove_all(d0);
  fs::remove_all(d3);
}
