// Plain next-token pre-training of every weight on a text file, one line per sample. It
// turns the random tiny model into a small language model, so that LoRA fine-tuning of the
// embedded demo behaves like fine-tuning a real base (a random base with frozen norms and
// head cannot move its logits far enough for the loss to fall).
#pragma once
#include <string>

#include "data/tokenizer.h"
#include "models/model.h"

namespace ftrun::runtime {

struct PretrainOptions {
  int64_t steps = 300;
  int64_t batch_size = 16;
  int64_t max_length = 64;
  double learning_rate = 3e-3;
  uint64_t seed = 42;
};

// Returns the mean loss of the last 10% of steps.
double pretrain_on_text(models::CausalLM& model, const data::Tokenizer& tok, const std::string& text_file,
                        int64_t bos_id, const PretrainOptions& opts);

}  // namespace ftrun::runtime
