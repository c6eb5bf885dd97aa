// Where training reports go: a JSONL metrics file in output_dir (one object per logging or
// evaluation step; evaluation keys carry the `eval_` prefix as in HF) and the terminal
// (a progress bar on a TTY, plain lines otherwise).
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

namespace ftrun::runtime {

class MetricsLog {
 public:
  // A fresh file (keep_through_step < 0), or on resume from step S the existing file's
  // records with step <= S (HF's log_history semantics: later ones are replaced by the resumed
  // run's), rewritten atomically before anything is appended. Errors name the path.
  explicit MetricsLog(const std::string& path, int64_t keep_through_step = -1);
  ~MetricsLog();
  void write(const nlohmann::json& record);      // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

class Progress {
 public:
  Progress(int64_t total_steps, bool enabled);
  void step(int64_t done);                         // redraws the bar on a TTY
  void log(const nlohmann::json& record);          // prints a record as one line
  void finish();

 private:
  int64_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_;
  std::string last_;
};

// Called by every rank's Progress::step with (steps done, total steps): how a worker started
// by ftrun's agent reports progress (and liveness between steps) to it. Empty by default.
void set_progress_observer(std::function<void(int64_t done, int64_t total)> observer);

// "loss 1.2345 | lr 4.9e-03 | ..." for a record.
std::string format_record(const nlohmann::json& record);

}  // namespace ftrun::runtime
