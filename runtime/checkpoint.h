// Checkpoints and resume: this module owns the on-disk schema of a training checkpoint and the
// collective protocol that writes it (layout in shared/DESIGN.md):
//
//   output_dir/checkpoint-N/
//     adapter_config.json + adapter_model.safetensors   LoRA / prefix: PEFT format
//     config.json + model*.safetensors (+ index)        full fine-tuning: HF format
//     optimizer/rank-R.safetensors                      this rank's AdamW moments: tensors
//                                                       "unit.U.exp_avg" / "unit.U.exp_avg_sq"
//                                                       (+ "unit.U.master", fp32 masters, when
//                                                       the trained weights are bf16)
//                                                       holding flat range [lo, hi) of unit U,
//                                                       the ranges in the file's __metadata__
//     optimizer/layout.json                             each unit's parameters: name, offset, numel
//     rng/rank-R.safetensors                            the rank's CPU generator state
//     trainer_state.json                                TrainerState below
//     tokenizer files                                   so the checkpoint is usable on its own
//     COMPLETE                                          written last
//
// Written into output_dir/.checkpoint-N.tmp, fsynced, then renamed: a crash mid-save never
// leaves a directory that looks complete, and earlier checkpoints are never touched.
// Optimizer ranges are in flat coordinates independent of the world size, so a checkpoint
// resumes under any world size and ZeRO stage. What must match for a resume is asked of the
// Strategy (resume_keys), never named here.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "peft/strategy.h"
#include "runtime/config.h"
#include "sharding/zero.h"

namespace ftrun::runtime {

namespace fs = std::filesystem;

// trainer_state.json. to_json() writes every field; from_json() needs global_step and
// position and defaults the rest (checkpoints of earlier versions), and its errors name the
// file and the key.
struct TrainerState {
  int64_t global_step = 0;
  int64_t position = 0;  // samples of the global stream consumed
  double epoch = 0;
  nlohmann::json log_history = nlohmann::json::array();  // the metrics records so far
  int world_size = 1;
  int zero_stage = 0;
  std::string strategy;                                     // Strategy::name()
  nlohmann::json peft_config;                               // null for full fine-tuning
  nlohmann::json model_config;                              // the base's config.json
  nlohmann::json training_args = nlohmann::json::object();  // resume_training_args()
  int64_t seed = 0;

  nlohmann::json to_json() const;
  static TrainerState from_json(const nlohmann::json& j, const std::string& path);
};

// The training_args a checkpoint records; a resume with other values goes on with a note.
nlohmann::json resume_training_args(const TrainingArgs& args);

// checkpoint_dir/trainer_state.json, checked (missing file: "not an ftrun checkpoint?").
TrainerState read_trainer_state(const fs::path& checkpoint_dir);

// Tokenizer files of model_dir that exist are copied into dst.
void copy_tokenizer(const std::string& model_dir, const fs::path& dst);

// Everything a save needs. Every rank calls the save functions (collective: stage 3 gathers,
// each rank writes its optimizer shard); rank 0 writes the weights and finishes.
struct SaveContext {
  const Config& cfg;
  peft::Strategy& strategy;
  models::CausalLM& model;
  sharding::ZeroEngine& engine;
  comm::Comm& comm;
  int zero_stage = 0;
};

// checkpoint-N for state.global_step: weights, every rank's optimizer shard and RNG, then on
// rank 0 trainer_state.json, tokenizer, fsync, COMPLETE, rename and save_total_limit
// rotation. Returns the final directory. FTRUN_TEST_KILL_IN_SAVE=N kills the process between
// writing and COMPLETE at step N (the crash-safety test).
fs::path save_checkpoint(const SaveContext& ctx, const TrainerState& state);

// The final result in output_dir itself, like trainer.save_model(): weights and tokenizer.
void save_final(const SaveContext& ctx);

// Step numbers of the COMPLETE checkpoints in output_dir, ascending.
std::vector<int64_t> complete_checkpoints(const std::string& output_dir);

// `--resume` values: "" or "no" = fresh; "yes" (any case) = newest COMPLETE checkpoint, or
// fresh with a message when there is none; digits N = checkpoint-N; else a checkpoint path.
// A missing or incomplete checkpoint is an error listing the complete ones.
std::optional<fs::path> resolve_resume(const std::string& arg, const std::string& output_dir, std::string* message);

// Checks that the run described by cfg (with `strategy`) can continue from the checkpoint's
// state: model, strategy and the strategy's resume_keys must match (error naming the
// difference); other changes are returned as notes.
std::vector<std::string> check_resume_compatible(const Config& cfg, const peft::Strategy& strategy,
                                                 const TrainerState& state, const nlohmann::json& model_config);

// Each rank: optimizer moments (re-sharded from whatever world size wrote them) and RNG.
void load_rank_state(const fs::path& dir, sharding::ZeroEngine& engine, int64_t steps, int rank);

}  // namespace ftrun::runtime
