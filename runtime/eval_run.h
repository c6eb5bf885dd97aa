// runtime/eval_run.h: `ftrun eval` as a runtime function: a trained result (adapter,
// checkpoint-N or full model) evaluated on the config's val or test split, with the same run
// setup as training (run_setup.h). The launcher only parses the command line.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "comm/comm.h"
#include "runtime/config.h"

namespace ftrun::runtime {

struct EvalRequest {
  std::string checkpoint;     // default: training_args.output_dir (the final result)
  std::string split = "val";  // "val" (data_config.val_file) or "test" (data_config.test_file)
  std::string output;         // predictions JSONL; default OUTPUT_DIR/predictions_SPLIT.jsonl
  int64_t max_new_tokens = 0; // 0: generation_config.max_new_tokens, else 512
  int64_t batch_size = 0;     // 0: per_device_eval_batch_size
};

// Fills the request's defaults and checks it against the config without touching other ranks
// (the split's file is set, the checkpoint holds a trained model), so a bad request fails on
// every rank before any rendezvous.
void prepare_eval_request(const Config& cfg, EvalRequest& request);

// One process per rank, as in training; each rank generates its share of the rows. At ZeRO
// stage 3 (zero_stage or the DeepSpeed file) on several ranks the weights are sharded and
// gathered unit by unit for each forward, so the ranks decode in lock-step. Rank 0 writes the
// predictions and {eval,test}_results.json (HF's trainer.save_metrics) and returns the
// metrics (eval_* / test_* keys); other ranks return null. Collective.
nlohmann::json evaluate_checkpoint(const Config& cfg, EvalRequest request, comm::Comm& comm);

}  // namespace ftrun::runtime
