// Reads a DeepSpeed JSON config (training_args.deepspeed, e.g. configs/ds_zero_3.json) the
// way HF Trainer does: "auto" values are filled from training_args; a concrete value that
// contradicts training_args is an error naming both; keys ftrun does not act on (bucket
// sizes, overlap_comm, ...) are listed in warnings, never silently dropped.
#pragma once
#include <string>
#include <vector>

#include "runtime/config.h"

namespace ftrun::runtime {

struct DeepSpeedSettings {
  int zero_stage = 0;
  double gradient_clipping = 1.0;
  std::vector<std::string> warnings;
};

DeepSpeedSettings read_deepspeed(const std::string& path, const TrainingArgs& args, int world_size);

// The ZeRO stage of a run: Config::zero_stage when set, else the DeepSpeed file's, else 0.
int zero_stage_of(const Config& cfg, int world_size, std::vector<std::string>* warnings = nullptr);

}  // namespace ftrun::runtime
