// The checkpoint's schema (runtime/checkpoint.h): trainer_state.json round-trips through
// TrainerState, its errors name the file and the key, and what must match for a resume comes
// from the Strategy (LoRA's rank matters to a LoRA run, and nothing PEFT-shaped to full SFT).
#include <gtest/gtest.h>

#include <string>

#include "peft/strategy.h"
#include "runtime/checkpoint.h"
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
