// The run report a person opens (`ftrun report OUTPUT_DIR`, and rank 0 at the end of training,
// like LLaMA-Factory's plot_loss): OUTPUT_DIR/report.html, one self-contained page (inline CSS
// and SVG, no script, nothing fetched) with the training loss (raw and smoothed), learning
// rate, grad norm and tokens/s against step, eval loss and ROUGE/BLEU when the run has them,
// the complete checkpoints marked on each step axis, a table of the run's config and the first
// test predictions next to their labels; and OUTPUT_DIR/training_loss.png, the loss curve
// drawn with cairo.
//
// What it reads: metrics.jsonl (a resumed run's file starts at the resume step, so the
// records before it come from the newest checkpoint's trainer_state.json log_history),
// run_config.json (the resolved config, written by training; without it the checkpoint's
// trainer_state.json), checkpoint-N/COMPLETE and predictions.jsonl.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace ftrun::runtime {

// The smoothing of the "smoothed" loss curve: TensorBoard's scalar smoothing (an exponential
// moving average with weight 0.6, debiased so the curve starts at the first value).
constexpr double kReportSmoothing = 0.6;
std::vector<double> smooth_ema(const std::vector<double>& values, double weight = kReportSmoothing);

// The metrics records of the run in output_dir, in step order (see above).
nlohmann::json read_run_records(const std::string& output_dir);

// The resolved config of a run, for the report: written at the start of training.
void write_run_config(const std::string& output_dir, const nlohmann::json& config);

struct ReportFiles {
  std::string html, png;  // png is "" when the run logged no training loss
};
// Writes report.html and training_loss.png into output_dir; an error names what is missing.
ReportFiles write_report(const std::string& output_dir);

// The end of training: write_report(), and a warning on stderr instead of an error (the
// trained model is already saved; a report that cannot be drawn must not fail the run).
void write_report_after_training(const std::string& output_dir, bool verbose);

}  // namespace ftrun::runtime
