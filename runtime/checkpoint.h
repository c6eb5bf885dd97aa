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
//     COMPLETE                                          written last: line 1 the step; then
//                                                       per file "xxh64 <hash> <size> <path>"
//
// Written into output_dir/.checkpoint-N.tmp, fsynced, then renamed: a crash mid-save never
// leaves a directory that looks complete, and earlier checkpoints are never touched.
// Optimizer ranges are in flat coordinates independent of the world size, so a checkpoint
// resumes under any world size and ZeRO stage. What must match for a resume is asked of the
// Strategy (resume_keys), never named here.
//
// Integrity: before a checkpoint is used, checkpoint_damage() verifies COMPLETE's checksums
// (XXH64, io/checksum.h) and that its files agree with each other (trainer_state.json against
// COMPLETE and the directory's step, layout.json against every rank's optimizer shard, each
// writing rank's RNG file present). `--resume yes` skips a damaged checkpoint with a warning
// naming the file and takes the newest intact one; `--resume N` / PATH on a damaged one is an
// error naming the file. Checkpoints of earlier versions (COMPLETE holding only the step) still
// resume, with a note: their files get the consistency checks, and their optimizer moments are
// read for finiteness, since no checksum vouches for their bytes.
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
  int64_t position = 0;  // samples of the global stream consumed (packed rows with packing)
  double epoch = 0;
  nlohmann::json log_history = nlohmann::json::array();  // the metrics records so far
  int world_size = 1;
  int zero_stage = 0;
  std::string strategy;                                     // Strategy::name()
  nlohmann::json peft_config;                               // null for full fine-tuning
  nlohmann::json model_config;                              // the base's config.json
  nlohmann::json training_args = nlohmann::json::object();  // resume_training_args()
  int64_t seed = 0;
  // packing: true (data/packing.h): the stream is of packed rows, so `position` counts rows.
  // Written only when true, so unpacked checkpoints stay as they were.
  bool packing = false;

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
  c10::Device device = c10::Device(c10::kCPU);  // the run's (runtime/device.h): its RNG is saved too
};

// checkpoint-N for state.global_step: weights, every rank's optimizer shard and RNG, then on
// rank 0 trainer_state.json, tokenizer, fsync, COMPLETE, rename and save_total_limit
// rotation. Returns the final directory. FTRUN_TEST_KILL_IN_SAVE=N kills the process between
// writing and COMPLETE at step N (the crash-safety test).
fs::path save_checkpoint(const SaveContext& ctx, const TrainerState& state);

// Writes dir/COMPLETE for a checkpoint of `step` whose other files are all written: the step,
// then every file's XXH64 checksum and size (what checkpoint_damage() verifies).
void mark_complete(const fs::path& dir, int64_t step);

// The final result in output_dir itself, like trainer.save_model(): weights and tokenizer,
// written into output_dir/.final.tmp and each file renamed into place.
void save_final(const SaveContext& ctx);

// Collective, before a training run writes anything (the token cache included): output_dir is
// set, is neither model_dir nor the adapter being continued nor inside them, and is new, empty
// or ftrun's own training output (a .ftrun_output marker of kind "training"; from before
// markers: metrics.jsonl, a checkpoint-N or the token cache), unless
// training_args.overwrite_output_dir. Each failure is one line naming the directory. Rank 0
// then creates it and marks it.
void prepare_output_dir(const Config& cfg, comm::Comm& comm);

// Step numbers of the COMPLETE checkpoints in output_dir, ascending.
std::vector<int64_t> complete_checkpoints(const std::string& output_dir);

// What is wrong with checkpoint dir as a resume point, naming the file ("" when intact); `note`
// receives a line for a checkpoint written before checksums.
std::string checkpoint_damage(const fs::path& dir, std::string* note = nullptr);

// `--resume` values: "" or "no" = fresh; "yes" (any case) = newest intact COMPLETE checkpoint
// (damaged newer ones skipped: one warning each, into `warnings`, or into `message` when it is
// null; all damaged: an error), or fresh with a message when there is none; digits N =
// checkpoint-N; else a checkpoint path. A missing, incomplete or damaged checkpoint is an error
// naming it (and listing the complete ones where it is missing).
std::optional<fs::path> resolve_resume(const std::string& arg, const std::string& output_dir, std::string* message,
                                       std::vector<std::string>* warnings = nullptr);

// A checkpoint beyond the run (global_step > total_steps) would train nothing: an error naming
// its trainer_state.json. global_step == total_steps is a finished run (only the final save).
void check_resume_step(const fs::path& dir, const TrainerState& state, int64_t total_steps);

// Checks that the run described by cfg (with `strategy`) can continue from the checkpoint's
// state: model, strategy and the strategy's resume_keys must match (error naming the
// difference); other changes are returned as notes.
std::vector<std::string> check_resume_compatible(const Config& cfg, const peft::Strategy& strategy,
                                                 const TrainerState& state, const nlohmann::json& model_config);

// Each rank: optimizer moments (re-sharded from whatever world size wrote them) and RNG (its
// file missing is an error for a rank the writing run had; a rank beyond it keeps the seed's).
// device: the run's (runtime/device.h); on a GPU its generator's state is restored too.
void load_rank_state(const fs::path& dir, sharding::ZeroEngine& engine, int64_t steps, int rank,
                     const c10::Device& device = c10::Device(c10::kCPU));

}  // namespace ftrun::runtime
