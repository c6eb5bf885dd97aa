// runtime/: owns a run: config (config.h, deepspeed.h), run setup (run_setup.h), precision
// (precision.h), the training loop (this file), checkpoints (checkpoint.h), evaluation and
// generation (evaluate.h, eval_run.h, generate.h), metrics and schedules.
//
// The training loop. One optimizer step = gradient accumulation over micro-batches, with the
// loss averaged over all label tokens of the accumulated batch (transformers >= 4.46
// `num_items_in_batch`), global-norm clipping, the HF LR schedule and AdamW.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/collator.h"
#include "models/model.h"
#include "peft/strategy.h"
#include "runtime/config.h"
#include "comm/comm.h"
#include "sharding/zero.h"
#include "runtime/schedule.h"

namespace ftrun::runtime {

struct StepStats {
  double loss = 0;       // mean token loss of the accumulated batch
  double grad_norm = 0;  // before clipping
  double lr = 0;         // learning rate this step used
  int64_t label_tokens = 0;
  int64_t input_tokens = 0;  // non-padding tokens
  bool nonfinite = false;    // loss or grad norm NaN/inf: no update was applied (grads zeroed)
};

// One optimizer step across all ranks: the trainable tensors go to a ZeRO engine of the
// configured stage over `comm` (a world of one when null). Each rank passes its own
// micro-batches; the loss is divided by the label tokens of the whole global batch.
class Stepper {
 public:
  Stepper(models::CausalLM& model, const peft::NamedTensors& trainable, const TrainingArgs& args,
          int64_t total_steps, std::shared_ptr<comm::Comm> comm = nullptr, int zero_stage = 0,
          bool keep_params = false);
  StepStats step(const std::vector<data::Batch>& micro_batches);
  int64_t steps_done() const { return engine_->steps(); }
  const Schedule& schedule() const { return schedule_; }
  sharding::ZeroEngine& engine() { return *engine_; }
  // Tests only (FTRUN_TEST_NAN_LOSS_AT_STEP): the next step's local loss on this rank is NaN.
  void poison_next_loss() { poison_loss_ = true; }

 private:
  models::CausalLM& model_;
  std::shared_ptr<comm::Comm> comm_;
  std::unique_ptr<sharding::ZeroEngine> engine_;
  Schedule schedule_;
  double max_grad_norm_;
  bool autocast_ = false;  // training_args.bf16: forwards under CPU bf16 autocast
  bool poison_loss_ = false;  // see poison_next_loss()
  double neftune_alpha_ = 0;  // training_args.neftune_noise_alpha (0 = off)
  int64_t seed_ = 42;         // training_args.seed: NEFTune's noise is drawn from it
};

// NEFTune's generator seed for one training forward: a splitmix64 chain over (seed, the
// optimizer step about to be taken, the micro-batch's index in it, rank), shifted to 63 bits.
// A fresh CPU mt19937 generator seeded with it draws the noise (as torch.manual_seed(S) would
// on the default one; mt19937 keys on S's low 32 bits), so a resumed run draws the same noise.
uint64_t neftune_seed(int64_t seed, int64_t step, int64_t micro, int64_t rank);

// Mean token loss of `samples` under `model` (no grad), in batches of batch_size.
double evaluate_loss(models::CausalLM& model, const std::vector<data::Sample>& samples,
                     int64_t batch_size, int64_t pad_id);

struct TrainSummary {
  std::vector<StepStats> steps;
  std::string output_dir;
};

// The whole run of `ftrun CONFIG.yaml` on this rank: tokenizer, data, model, strategy,
// loop, logs and checkpoints (rank 0 writes), final adapter in output_dir. `comm` is the
// process group (a world of one when null); `verbose` prints progress on rank 0; `resume`
// is the --resume value (see checkpoint.h: "", "yes", a step number or a path).
TrainSummary train(const Config& cfg, bool verbose = true, std::shared_ptr<comm::Comm> comm = nullptr,
                   const std::string& resume = "");

}  // namespace ftrun::runtime
