// The checkpoint's schema (runtime/checkpoint.h): trainer_state.json round-trips through
// TrainerState, its errors name the file and the key, and what must match for a resume comes
// from the Strategy (LoRA's rank matters to a LoRA run, and nothing PEFT-shaped to full SFT).
// Integrity: a checkpoint whose files changed after COMPLETE (checksums), disagree with each
// other (step, layout vs shards, RNG) or come from an earlier version (no checksums) is found
// by checkpoint_damage(), skipped by `--resume yes` and refused by `--resume N`.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "peft/strategy.h"
#include "runtime/checkpoint.h"
#include "io/file.h"
#include "models/safetensors.h"
#include "runtime/config.h"
#include "testing/errors.h"

using namespace ftrun;

namespace {

runtime::TrainerState sample_state() {
  runtime::TrainerState s;
  s.global_step = 12;
  s.position = 96;
  s.epoch = 1.5;
  s.log_history = nlohmann::json::array({{{"step", 10}, {"loss", 1.25}}});
  s.world_size = 2;
  s.zero_stage = 3;
  s.strategy = "LORA";
  s.peft_config = {{"peft_type", "LORA"}, {"r", 8}, {"lora_alpha", 16}, {"target_modules", {"q_proj"}}};
  s.model_config = {{"model_type", "llama"}, {"hidden_size", 64}};
  s.training_args = {{"seed", 42}, {"learning_rate", 5e-4}};
  s.seed = 42;
  return s;
}

using ftrun::testing::error_of;

}  // namespace

TEST(TrainerState, RoundTripsThroughJson) {
  const auto s = sample_state();
  const auto j = s.to_json();
  // The on-disk keys are the ones earlier versions wrote (a resume reads old checkpoints).
  for (const char* k : {"global_step", "position", "epoch", "log_history", "world_size", "zero_stage", "strategy",
                        "peft_config", "model_config", "training_args", "seed"})
    EXPECT_TRUE(j.contains(k)) << k;
  const auto back = runtime::TrainerState::from_json(j, "x/trainer_state.json");
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.global_step, 12);
  EXPECT_EQ(back.position, 96);
  EXPECT_EQ(back.zero_stage, 3);
}

TEST(TrainerState, ErrorsNameTheFileAndTheKey) {
  auto j = sample_state().to_json();
  j.erase("position");
  auto msg = error_of([&] { runtime::TrainerState::from_json(j, "ck/trainer_state.json"); });
  EXPECT_EQ(msg, "ck/trainer_state.json: missing key 'position'");
  j = sample_state().to_json();
  j["global_step"] = "twelve";
  msg = error_of([&] { runtime::TrainerState::from_json(j, "ck/trainer_state.json"); });
  EXPECT_NE(msg.find("'global_step' must be an integer"), std::string::npos) << msg;
  msg = error_of([&] { runtime::TrainerState::from_json(nlohmann::json::array(), "ck/trainer_state.json"); });
  EXPECT_NE(msg.find("expected a JSON object"), std::string::npos) << msg;
  // Optional keys default (a minimal state still loads).
  const auto min = runtime::TrainerState::from_json({{"global_step", 3}, {"position", 6}}, "p");
  EXPECT_EQ(min.world_size, 1);
  EXPECT_TRUE(min.log_history.is_array());
}

TEST(ResumeCompatibility, TheStrategyNamesWhatMustMatch) {
  const auto state = sample_state();
  runtime::Config cfg;
  cfg.model_dir = "base";
  cfg.peft_config = state.peft_config;
  cfg.training_args.seed = 42;
  cfg.training_args.learning_rate = 5e-4;
  auto lora = peft::make_strategy(cfg.peft_config);
  EXPECT_FALSE(lora->resume_keys().empty());
  EXPECT_TRUE(runtime::check_resume_compatible(cfg, *lora, state, state.model_config).empty());

  cfg.peft_config["r"] = 16;
  auto msg = error_of([&] { runtime::check_resume_compatible(cfg, *lora, state, state.model_config); });
  EXPECT_EQ(msg, "cannot resume: peft_config.r changed from 8 to 16");
  cfg.peft_config["r"] = 8;

  cfg.training_args.learning_rate = 1e-3;  // allowed, reported as a note
  auto notes = runtime::check_resume_compatible(cfg, *lora, state, state.model_config);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("training_args.learning_rate changed"), std::string::npos) << notes[0];

  // A full fine-tune names no PEFT keys: its strategy's resume_keys are empty.
  auto full = peft::make_strategy(nullptr);
  EXPECT_TRUE(full->resume_keys().empty());
  EXPECT_TRUE(full->trains_all_weights());
  EXPECT_FALSE(lora->trains_all_weights());
  runtime::TrainerState fs = state;
  fs.peft_config = nullptr;
  fs.strategy = "FULL";
  cfg.peft_config = nullptr;
  cfg.training_args.learning_rate = 5e-4;
  EXPECT_TRUE(runtime::check_resume_compatible(cfg, *full, fs, fs.model_config).empty());
  // A changed strategy is still refused.
  msg = error_of([&] { runtime::check_resume_compatible(cfg, *full, state, state.model_config); });
  EXPECT_EQ(msg, "cannot resume: the strategy changed from \"LORA\" to \"FULL\"");
}

namespace {

namespace fs = std::filesystem;

// A hand-made checkpoint-`step` of a two-rank ZeRO-1 run with one unit of 6 elements (each
// rank's shard holds half), marked COMPLETE with checksums (or, `legacy`, the step only).
fs::path make_checkpoint(const fs::path& out, int64_t step, bool legacy = false) {
  const auto dir = out / ("checkpoint-" + std::to_string(step));
  fs::create_directories(dir / "optimizer");
  fs::create_directories(dir / "rng");
  auto state = sample_state();
  state.global_step = step;
  state.world_size = 2;
  ftrun::io::write_json_atomic(dir / "trainer_state.json", state.to_json());
  ftrun::io::write_json_atomic(dir / "optimizer" / "layout.json",
                               {{"units", {{{"unit", 0}, {"numel", 6}, {"params", {{{"name", "w"}, {"offset", 0}, {"numel", 6}}}}}}}});
  for (int r = 0; r < 2; ++r) {
    st::save((dir / "optimizer" / ("rank-" + std::to_string(r) + ".safetensors")).string(),
             {{"unit.0.exp_avg", torch::full({3}, 0.5)}, {"unit.0.exp_avg_sq", torch::full({3}, 0.25)}},
             {{"format", "pt"}, {"ftrun_ranges", nlohmann::json({{"0", {3 * r, 3 * r + 3}}}).dump()}});
    st::save((dir / "rng" / ("rank-" + std::to_string(r) + ".safetensors")).string(),
             {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}});
  }
  std::ofstream(dir / "adapter_model.safetensors") << "weights";
  if (legacy)
    ftrun::io::write_file_atomic(dir / "COMPLETE", std::to_string(step) + "\n");
  else
    runtime::mark_complete(dir, step);
  return dir;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(CheckpointIntegrity, AnIntactCheckpointPassesAndCompleteStartsWithTheStep) {
  ftrun::testing::ScratchDir t;
  const auto dir = make_checkpoint(t.path, 10);
  std::string note;
  EXPECT_EQ(runtime::checkpoint_damage(dir, &note), "");
  EXPECT_EQ(note, "");
  std::ifstream in(dir / "COMPLETE");
  std::string first, second;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_EQ(first, "10");  // what earlier readers take from it
  EXPECT_TRUE(has(second, "xxh64 ") && has(second, " adapter_model.safetensors")) << second;
  EXPECT_EQ(*runtime::resolve_resume("10", t.path.string(), nullptr), dir);
}

TEST(CheckpointIntegrity, ChangedBytesAreNamed) {
  ftrun::testing::ScratchDir t;
  const auto dir = make_checkpoint(t.path, 10);
  const auto shard = dir / "optimizer" / "rank-1.safetensors";
  // Same size, other bytes: the checksum.
  std::string bytes = ftrun::io::read_text_file(shard);
  bytes[bytes.size() - 1] ^= 0x7f;
  ftrun::io::write_file_atomic(shard, bytes);
  auto msg = runtime::checkpoint_damage(dir);
  EXPECT_TRUE(has(msg, shard.string() + ": checksum xxh64 ") && has(msg, "changed after the checkpoint was written")) << msg;
  // Another size.
  ftrun::io::write_file_atomic(shard, "short");
  msg = runtime::checkpoint_damage(dir);
  EXPECT_TRUE(has(msg, shard.string() + ": 5 bytes, COMPLETE says ")) << msg;
  fs::remove(shard);
  EXPECT_EQ(runtime::checkpoint_damage(dir), shard.string() + ": missing (COMPLETE lists it)");
}

TEST(CheckpointIntegrity, AFileCompleteDoesNotListIsDamage) {
  ftrun::testing::ScratchDir t;
  const auto dir = make_checkpoint(t.path, 10);
  fs::copy_file(dir / "optimizer" / "rank-1.safetensors", dir / "optimizer" / "rank-2.safetensors");
  EXPECT_EQ(runtime::checkpoint_damage(dir),
            (dir / "optimizer" / "rank-2.safetensors").string() + ": not part of the checkpoint as written (COMPLETE does not list it)");
}

TEST(CheckpointIntegrity, InconsistentFilesAreNamedEvenWithoutChecksums) {
  {  // trainer_state.json's step against the directory's and COMPLETE's
    ftrun::testing::ScratchDir t;
    const auto dir = make_checkpoint(t.path, 10, /*legacy=*/true);
    std::string note;
    EXPECT_EQ(runtime::checkpoint_damage(dir, &note), "");
    EXPECT_TRUE(has(note, "written before checkpoints carried checksums")) << note;
    auto j = ftrun::io::read_json_file(dir / "trainer_state.json");
    j["global_step"] = 9999;
    ftrun::io::write_json_atomic(dir / "trainer_state.json", j);
    EXPECT_EQ(runtime::checkpoint_damage(dir), (dir / "trainer_state.json").string() + ": global_step 9999, but COMPLETE says 10");
    ftrun::io::write_file_atomic(dir / "COMPLETE", "9999\n");
    EXPECT_EQ(runtime::checkpoint_damage(dir), (dir / "trainer_state.json").string() + ": global_step 9999, but the directory is checkpoint-10");
  }
  {  // a NaN moment, a shard of another layout, a missing RNG file
    ftrun::testing::ScratchDir t;
    const auto dir = make_checkpoint(t.path, 10, true);
    const auto shard = (dir / "optimizer" / "rank-0.safetensors").string();
    st::save(shard, {{"unit.0.exp_avg", torch::full({3}, NAN)}, {"unit.0.exp_avg_sq", torch::full({3}, 0.25)}},
             {{"format", "pt"}, {"ftrun_ranges", R"({"0": [0, 3]})"}});
    EXPECT_EQ(runtime::checkpoint_damage(dir), shard + ": unit.0.exp_avg holds NaN or infinite values");
    st::save(shard, {{"unit.0.exp_avg", torch::zeros({8})}, {"unit.0.exp_avg_sq", torch::zeros({8})}},
             {{"format", "pt"}, {"ftrun_ranges", R"({"0": [0, 8]})"}});
    EXPECT_EQ(runtime::checkpoint_damage(dir), shard + ": range [0, 8) of unit 0 is outside the unit's 6 elements in layout.json");
    st::save(shard, {{"unit.0.exp_avg", torch::zeros({2})}, {"unit.0.exp_avg_sq", torch::zeros({2})}},
             {{"format", "pt"}, {"ftrun_ranges", R"({"0": [0, 2]})"}});
    EXPECT_TRUE(has(runtime::checkpoint_damage(dir), "covers only [0, 2) of its 6 elements")) << runtime::checkpoint_damage(dir);
    st::save(shard, {{"unit.0.exp_avg", torch::zeros({3})}, {"unit.0.exp_avg_sq", torch::zeros({3})}},
             {{"format", "pt"}, {"ftrun_ranges", R"({"0": [0, 3]})"}});
    EXPECT_EQ(runtime::checkpoint_damage(dir), "");
    fs::remove(dir / "rng" / "rank-1.safetensors");
    EXPECT_TRUE(has(runtime::checkpoint_damage(dir), (dir / "rng" / "rank-1.safetensors").string() + ": missing (the checkpoint was written by 2 rank(s)"))
        << runtime::checkpoint_damage(dir);
  }
}

TEST(CheckpointIntegrity, ResumeYesFallsBackAndResumeNIsAnError) {
  ftrun::testing::ScratchDir t;
  make_checkpoint(t.path, 10);
  const auto newest = make_checkpoint(t.path, 20);
  fs::remove(newest / "rng" / "rank-0.safetensors");
  std::string message;
  std::vector<std::string> warnings;
  auto dir = runtime::resolve_resume("yes", t.path.string(), &message, &warnings);
  ASSERT_TRUE(dir);
  EXPECT_EQ(dir->filename(), "checkpoint-10");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(has(warnings[0], "skipping damaged checkpoint-20: " + (newest / "rng" / "rank-0.safetensors").string() + ": missing"))
      << warnings[0];
  EXPECT_EQ(message, "--resume yes: resuming from checkpoint-10, the newest intact checkpoint");
  // Without a warnings list the warning goes into the message.
  runtime::resolve_resume("yes", t.path.string(), &message);
  EXPECT_TRUE(has(message, "skipping damaged checkpoint-20") && has(message, "resuming from checkpoint-10")) << message;
  for (const std::string& arg : std::vector<std::string>{"20", newest.string()}) {
    auto msg = error_of([&] { runtime::resolve_resume(arg, t.path.string(), nullptr); });
    EXPECT_TRUE(has(msg, "--resume " + arg + ": " + newest.string() + " is damaged: " + (newest / "rng" / "rank-0.safetensors").string()))
        << msg;
  }
  // Every checkpoint damaged: an error, not a silent fresh start over them.
  fs::remove(t.path / "checkpoint-10" / "trainer_state.json");
  auto msg = error_of([&] { runtime::resolve_resume("yes", t.path.string(), nullptr); });
  EXPECT_TRUE(has(msg, "--resume yes: no intact checkpoint in " + t.path.string()) && has(msg, "checkpoint-10/trainer_state.json"))
      << msg;
}

TEST(CheckpointIntegrity, AStepBeyondTheRunIsAnError) {
  auto state = sample_state();
  EXPECT_EQ(error_of([&] { runtime::check_resume_step("ck", state, 12); }), "(no error)");
  EXPECT_EQ(error_of([&] { runtime::check_resume_step("ck", state, 11); }),
            "ck/trainer_state.json: global_step 12 is beyond this run's 11 steps (max_steps / num_train_epochs): nothing "
            "would be trained; raise max_steps, or start fresh in another output_dir");
}
