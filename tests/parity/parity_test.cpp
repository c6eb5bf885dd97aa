// Holds ftrun's model math, LoRA and training step to an independent reference: the Python
// re-implementation of HF transformers' LlamaForCausalLM/Qwen2 and PEFT LoRA in
// tests/reference/llama_ref.py. The reference writes the model (HF on-disk form), the start
// adapter (PEFT form), logits and per-step losses; ftrun must load those files unchanged and
// reproduce the numbers: logits to 1e-5, each step's loss to 1e-4 relative.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "models/model.h"
#include "tests/parity/reference_io.h"
#include "models/safetensors.h"
#include "peft/strategy.h"
#include "runtime/trainer.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

struct Case {
  std::string make_args, run_args;
  std::vector<std::string> targets;
  int64_t r;
  double alpha, lr, weight_decay, max_grad_norm;
  int64_t warmup, grad_accum;
};

void check_case(const std::string& name, const Case& c) {
  auto dir = fs::temp_directory_path() / ("ftrun_parity_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string ref = ftrun::testing::reference_python() + " " FTRUN_SOURCE_DIR "/tests/reference/llama_ref.py";
  std::string targets;
  for (const auto& t : c.targets) targets += (targets.empty() ? "" : ",") + t;
  ftrun::testing::run_reference(ref + " make --out " + (dir / "model").string() + " " + c.make_args);
  ftrun::testing::run_reference(ref + " data --out " + (dir / "data.json").string() + " --seed 3 --micro-batches 6 --batch 2 --seq 12 --prompt-len 3 " +
      "--vocab " + std::to_string(models::load_model_config((dir / "model").string()).vocab_size));
  ftrun::testing::run_reference(ref + " run --model " + (dir / "model").string() + " --data " + (dir / "data.json").string() + " --out " +
      (dir / "ref").string() + " --r " + std::to_string(c.r) + " --alpha " + std::to_string(c.alpha) +
      " --target-modules " + targets + " --seed 5 --nonzero-b --lr " + std::to_string(c.lr) +
      " --weight-decay " + std::to_string(c.weight_decay) + " --warmup-steps " + std::to_string(c.warmup) +
      " --max-grad-norm " + std::to_string(c.max_grad_norm) + " --grad-accum " + std::to_string(c.grad_accum) +
      " --num-items shifted " + c.run_args);

  nlohmann::json golden;
  std::ifstream(dir / "ref" / "golden.json") >> golden;
  nlohmann::json data_json;
  std::ifstream(dir / "data.json") >> data_json;
  auto batches = ftrun::testing::load_reference_batches(data_json);
  auto logits_file = st::File::open((dir / "ref" / "logits.safetensors").string());

  // The model directory as the reference wrote it, loaded unchanged.
  auto model = models::load_pretrained((dir / "model").string());
  auto compare_logits = [&](const std::string& key) {
    torch::NoGradGuard ng;
    model->eval();
    for (size_t i = 0; i < batches.size(); ++i) {
      auto ours = model->forward(batches[i].input_ids, batches[i].attention_mask);
      auto theirs = logits_file->get(key + "." + std::to_string(i));
      ASSERT_EQ(ours.sizes(), theirs.sizes());
      auto valid = batches[i].attention_mask.to(torch::kBool).unsqueeze(-1).expand_as(ours);
      double diff = (ours - theirs).abs().masked_select(valid).max().item<double>();
      EXPECT_LT(diff, 1e-5) << key << " micro-batch " << i;
    }
  };
  compare_logits("logits_base");

  nlohmann::json peft_cfg = {{"peft_type", "LORA"}, {"r", c.r}, {"lora_alpha", c.alpha},
                             {"lora_dropout", 0.0}, {"target_modules", c.targets}};
  auto strategy = peft::make_strategy(peft_cfg);
  strategy->apply(*model);
  strategy->load((dir / "ref" / "start_adapter").string());
  compare_logits("logits_adapter");

  runtime::TrainingArgs args;
  args.learning_rate = c.lr;
  args.weight_decay = c.weight_decay;
  args.warmup_steps = c.warmup;
  args.max_grad_norm = c.max_grad_norm;
  args.gradient_accumulation_steps = c.grad_accum;
  int64_t steps = golden["loss_per_step"].size();
  runtime::Stepper stepper(*model, strategy->trainable(), args, steps);
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<data::Batch> micro(batches.begin() + s * c.grad_accum, batches.begin() + (s + 1) * c.grad_accum);
    auto st = stepper.step(micro);
    double ref_loss = golden["loss_per_step"][s].get<double>();
    EXPECT_NEAR(st.loss, ref_loss, 1e-4 * std::abs(ref_loss)) << "step " << s;
    double ref_norm = golden["grad_norm_per_step"][s].get<double>();
    EXPECT_NEAR(st.grad_norm, ref_norm, 1e-4 * std::abs(ref_norm)) << "step " << s;
    EXPECT_NEAR(st.lr, golden["lr_per_step"][s].get<double>(), 1e-12) << "step " << s;
  }
  compare_logits("logits_final");
  auto final_file = st::File::open(golden["final_adapter"].get<std::string>());
  for (const auto& kv : strategy->trainable()) {
    auto theirs = final_file->get(kv.first);
    double diff = (kv.second - theirs).abs().max().item<double>();
    EXPECT_LT(diff, 1e-5) << kv.first;
  }
  fs::remove_all(dir);
}

}  // namespace

TEST(Parity, LlamaGqaLlama3RopeAllLinearTargets) {
  check_case("llama", {"--seed 1 --vocab 97 --hidden 32 --layers 2 --heads 4 --kv-heads 2 --inter 48 --rope-scaling llama3",
                       "",
                       {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
                       4, 8.0, 5e-3, 0.01, 1.0, 1, 2});
}

TEST(Parity, Qwen2TiedQkvBias) {
  check_case("qwen2", {"--seed 2 --vocab 89 --hidden 32 --layers 2 --heads 4 --kv-heads 1 --inter 40 --model-type qwen2 --tie",
                       "",
                       {"q_proj", "v_proj"},
                       2, 16.0, 1e-2, 0.0, 0.5, 0, 1});
}

TEST(Parity, LlamaMhaAttentionBiasNoClipping) {
  check_case("llama_bias", {"--seed 4 --vocab 71 --hidden 24 --layers 1 --heads 3 --kv-heads 3 --inter 36 --attention-bias --mlp-bias",
                            "",
                            {"o_proj", "down_proj"},
                            3, 6.0, 2e-2, 0.1, 0.0, 0, 3});
}
