// DeepSpeed JSON reading: the demo's ds_zero_2/3 files, "auto" filling, contradictions,
// and warnings that name the keys ftrun does not act on.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/deepspeed.h"

namespace fs = std::filesystem;
using namespace ftrun::runtime;

namespace {

std::string write(const std::string& name, const std::string& text) {
  auto p = fs::temp_directory_path() / ("ftrun_ds_" + std::to_string(getpid()) + "_" + name);
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::string& path, const TrainingArgs& args, int world = 1) {
  try {
    read_deepspeed(path, args, world);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DeepSpeed, DemoFilesGiveTheirStagesAndNameIgnoredKeys) {
  TrainingArgs args;
  auto z2 = read_deepspeed(FTRUN_SOURCE_DIR "/configs/ds_zero_2.json", args, 4);
  EXPECT_EQ(z2.zero_stage, 2);
  auto z3 = read_deepspeed(FTRUN_SOURCE_DIR "/configs/ds_zero_3.json", args, 8);
  EXPECT_EQ(z3.zero_stage, 3);
  std::string all;
  for (const auto& w : z3.warnings) all += w + "\n";
  EXPECT_NE(all.find("zero_optimization.overlap_comm"), std::string::npos) << all;
  EXPECT_NE(all.find("zero_optimization.stage3_prefetch_bucket_size"), std::string::npos) << all;
}

TEST(DeepSpeed, ConcreteValuesMustAgreeWithTrainingArgs) {
  TrainingArgs args;
  args.per_device_train_batch_size = 4;
  args.gradient_accumulation_steps = 2;
  auto ok = write("ok.json", R"({"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
      "gradient_accumulation_steps": "auto", "gradient_clipping": 1.0, "zero_optimization": {"stage": 1}})");
  EXPECT_EQ(read_deepspeed(ok, args, 2).zero_stage, 1);
  auto bad = write("bad.json", R"({"train_micro_batch_size_per_gpu": 8})");
  auto e = error_of(bad, args);
  EXPECT_NE(e.find(bad), std::string::npos) << e;
  EXPECT_NE(e.find("train_micro_batch_size_per_gpu: 8 contradicts training_args.per_device_train_batch_size"),
            std::string::npos) << e;
  auto clip = write("clip.json", R"({"gradient_clipping": 0.5})");
  EXPECT_NE(error_of(clip, args).find("max_grad_norm"), std::string::npos);
  auto lr = write("lr.json", R"({"optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": "auto"}}})");
  EXPECT_NE(error_of(lr, args).find("optimizer.params.lr"), std::string::npos);
  auto sgd = write("sgd.json", R"({"optimizer": {"type": "SGD"}})");
  EXPECT_NE(error_of(sgd, args).find("only {\"type\": \"AdamW\"}"), std::string::npos);
  auto stage = write("stage.json", R"({"zero_optimization": {"stage": 4}})");
  EXPECT_NE(error_of(stage, args).find("zero_optimization.stage: expected 0, 1, 2 or 3"), std::string::npos);
  auto offload = write("off.json", R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}})");
  EXPECT_NE(error_of(offload, args).find("offload"), std::string::npos);
  auto unknown = write("unk.json", R"({"zero_optimization": {"stage": 2}, "flops_profiler": {}})");
  auto r = read_deepspeed(unknown, args, 1);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("unsupported DeepSpeed keys ignored: flops_profiler"), std::string::npos);
  EXPECT_NE(error_of("/nonexistent/ds.json", args).find("/nonexistent/ds.json: cannot open"), std::string::npos);
}

TEST(DeepSpeed, ZeroStageOverrideWins) {
  Config cfg;
  cfg.training_args.deepspeed = FTRUN_SOURCE_DIR "/configs/ds_zero_3.json";
  EXPECT_EQ(zero_stage_of(cfg, 2), 3);
  cfg.zero_stage = 1;
  EXPECT_EQ(zero_stage_of(cfg, 2), 1);
  cfg.zero_stage = -1;
  cfg.training_args.deepspeed = "";
  EXPECT_EQ(zero_stage_of(cfg, 2), 0);
}

TEST(DeepSpeed, Bf16EnabledFollowsTrainingArgsAndFp16IsRefused) {
  TrainingArgs args;
  // "auto" follows training_args.bf16 (the demo's files); a concrete value must agree with it.
  auto demo = read_deepspeed(FTRUN_SOURCE_DIR "/configs/ds_zero_3.json", args, 2);
  for (const auto& w : demo.warnings) EXPECT_EQ(w.find("bf16"), std::string::npos) << w;
  auto on = write("bf16on.json", R"({"bf16": {"enabled": true}})");
  auto msg = error_of(on, args);
  EXPECT_NE(msg.find("bf16.enabled: true contradicts training_args.bf16 = false"), std::string::npos) << msg;
  args.bf16 = true;
  EXPECT_EQ(error_of(on, args), "");
  EXPECT_EQ(error_of(FTRUN_SOURCE_DIR "/configs/ds_zero_2.json", args), "");
  // fp16: refused, never run as fp32 with a warning.
  args.bf16 = false;
  args.fp16 = true;
  msg = error_of(FTRUN_SOURCE_DIR "/configs/ds_zero_2.json", args);
  EXPECT_NE(msg.find("fp16 with dynamic loss scaling is not implemented"), std::string::npos) << msg;
}
