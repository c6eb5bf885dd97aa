// LR schedules (see schedule.h); formulas of transformers' optimization.py.
#include "runtime/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace ftrun::runtime {

double Schedule::lr(int64_t s) const {
  double w = double(warmup_steps), T = double(total_steps), x = double(s);
  if (type == "constant") return base_lr;
  if (s < warmup_steps && type != "constant") return base_lr * x / std::max(1.0, w);
  if (type == "constant_with_warmup") return base_lr;
  if (type == "linear") return base_lr * std::max(0.0, (T - x) / std::max(1.0, T - w));
  if (type == "cosine") {
    double progress = (x - w) / std::max(1.0, T - w);
    return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
  }
  throw std::runtime_error("lr_scheduler_type '" + type + "' is not supported");
}

int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t total_steps) {
  if (warmup_steps > 0) return warmup_steps;
  return int64_t(std::ceil(warmup_ratio * double(total_steps)));
}

}  // namespace ftrun::runtime
