// Learning-rate schedules of HF transformers (get_scheduler): the multiplier applied to the
// base learning rate for the optimizer step with 0-based index `step`.
#pragma once
#include <cstdint>
#include <string>

namespace ftrun::runtime {

struct Schedule {
  std::string type = "linear";  // linear, constant, constant_with_warmup, cosine
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double base_lr = 5e-5;
  double lr(int64_t step) const;
};

// HF: warmup_steps if > 0, else ceil(warmup_ratio * total_steps).
int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t total_steps);

}  // namespace ftrun::runtime
