// ftrun's own log verbosity, from training_args.log_level (HF's names and order): the
// "ftrun: ..." info lines that rank 0 prints during training. HF's log_level sets the
// transformers logger on the main process; ftrun's counterpart is these lines:
//   passive (HF's default: keep the library's level) and info: printed, as always;
//   debug: printed, plus the resolved config at the start of a run;
//   warning, error, critical: not printed.
// Warnings about the config and the per-step loss records are printed at every level, as HF
// Trainer prints its loss records whatever log_level says; config warnings stay so that
// log_level can never make an ignored setting silent again.
// Header-only and torch-free: set once per process before the run starts.
#pragma once
#include <string>

namespace ftrun::runtime {

enum class LogLevel { kDebug = 10, kInfo = 20, kWarning = 30, kError = 40, kCritical = 50 };

inline LogLevel& log_level_slot() {
  static LogLevel level = LogLevel::kInfo;
  return level;
}

// One of config.cpp's kLogLevels (the reader has checked it); anything else means info.
inline void set_log_level(const std::string& hf_level) {
  LogLevel l = LogLevel::kInfo;
  if (hf_level == "debug") l = LogLevel::kDebug;
  else if (hf_level == "warning") l = LogLevel::kWarning;
  else if (hf_level == "error") l = LogLevel::kError;
  else if (hf_level == "critical") l = LogLevel::kCritical;
  log_level_slot() = l;
}

inline bool info_enabled() { return log_level_slot() <= LogLevel::kInfo; }
inline bool debug_enabled() { return log_level_slot() <= LogLevel::kDebug; }

}  // namespace ftrun::runtime
