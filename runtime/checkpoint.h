// Checkpoints and resume (layout in shared/DESIGN.md):
//
//   output_dir/checkpoint-N/
//     adapter_config.json + adapter_model.safetensors   LoRA / prefix: PEFT format
//     config.json + model*.safetensors (+ index)        full fine-tuning: HF format
//     optimizer/rank-R.safetensors                      this rank's AdamW moments: tensors
//                                                       "unit.U.exp_avg" / "unit.U.exp_avg_sq"
//                                                       holding flat range [lo, hi) of unit U,
//                                                       the ranges in the file's __metadata__
//     optimizer/layout.json                             each unit's parameters: name, offset, numel
//     rng/rank-R.safetensors                            the rank's CPU generator state
//     trainer_state.json                                global_step, sample-stream position,
//                                                       log history, world size, ZeRO stage,
//                                                       strategy, peft_config, model config, seed
//     tokenizer files                                   so the checkpoint is usable on its own
//     COMPLETE                                          written last
//
// Written into output_dir/.checkpoint-N.tmp, fsynced, then renamed: a crash mid-save never
// leaves a directory that looks complete, and earlier checkpoints are never touched.
// Optimizer ranges are in flat coordinates independent of the world size, so a checkpoint
// resumes under any world size and ZeRO stage.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "peft/strategy.h"
#include "runtime/config.h"
#include "sharding/zero.h"

namespace ftrun::runtime {

namespace fs = std::filesystem;

// Tokenizer files of model_dir that exist are copied into dst.
void copy_tokenizer(const std::string& model_dir, const fs::path& dst);
void write_json(const fs::path& path, const nlohmann::json& j);

fs::path checkpoint_tmp_dir(const std::string& output_dir, int64_t step);
// Each rank: its optimizer shard and RNG state into dir (rank 0 also the layout).
void save_rank_state(const fs::path& dir, const sharding::ZeroEngine& engine, int rank);
// Rank 0, after every rank wrote: trainer_state.json, tokenizer, fsync, COMPLETE, rename,
// save_total_limit rotation. Returns the final directory.
fs::path finish_checkpoint(const Config& cfg, const fs::path& tmp, int64_t step, const nlohmann::json& state);

// Full fine-tuning under ZeRO-3: HF shards written unit by unit (collective; rank 0 writes).
void save_model_streaming(sharding::ZeroEngine& engine, models::CausalLM& model, const fs::path& dir, bool write);

// Step numbers of the COMPLETE checkpoints in output_dir, ascending.
std::vector<int64_t> complete_checkpoints(const std::string& output_dir);

// `--resume` values: "" or "no" = fresh; "yes" (any case) = newest COMPLETE checkpoint, or
// fresh with a message when there is none; digits N = checkpoint-N; else a checkpoint path.
// A missing or incomplete checkpoint is an error listing the complete ones.
std::optional<fs::path> resolve_resume(const std::string& arg, const std::string& output_dir, std::string* message);

// Checks that the run described by cfg can continue from the checkpoint's state: model,
// strategy and its shape-defining options must match (error naming the difference); other
// changes are returned as notes.
std::vector<std::string> check_resume_compatible(const Config& cfg, const nlohmann::json& state,
                                                 const nlohmann::json& model_config);

// Each rank: optimizer moments (re-sharded from whatever world size wrote them) and RNG.
void load_rank_state(const fs::path& dir, sharding::ZeroEngine& engine, int64_t steps, int rank);

}  // namespace ftrun::runtime
