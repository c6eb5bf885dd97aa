// Inference: load a base model or a trained adapter directory, and generation with a KV
// cache (greedy or sampled, with HF's logits processors).
#pragma once
#include <ATen/core/Generator.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "models/model.h"
#include "peft/strategy.h"

namespace ftrun::runtime {

struct Inference {
  std::shared_ptr<models::CausalLM> model;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<data::ChatTemplate> chat_template;
  std::unique_ptr<peft::Strategy> strategy;  // null for a plain model
  std::string base_dir;
};

// `path` is an HF model directory, or a PEFT adapter directory whose
// base_model_name_or_path (or `base_override`) names the base. The tokenizer comes from
// `path` when it holds one (ftrun copies it into every output), else from the base.
Inference load_for_inference(const std::string& path, const std::string& base_override = "",
                             const std::string& template_override = "");

// What HF's generate() calls GenerationConfig, with its defaults; do_sample=false is greedy.
struct GenerateOptions {
  int64_t max_new_tokens = 64;
  bool do_sample = false;
  double temperature = 1.0;         // sampling only; > 0
  double top_p = 1.0;               // sampling only; 1 = off
  int64_t top_k = 0;                // sampling only; 0 = off (HF's default of 50 is not taken)
  double repetition_penalty = 1.0;  // 1 = off; applied in greedy and sampling
  uint64_t seed = 0;                // sampling RNG
  std::vector<int64_t> stop_ids;    // generation stops after one of these (it is included)
  bool use_cache = true;            // false: recompute the whole sequence every step
};

struct GenerateStats {
  double first_token_seconds = 0;  // prompt processing + first token
  double total_seconds = 0;
  int64_t new_tokens = 0;
  double tokens_per_second() const { return total_seconds > 0 ? new_tokens / total_seconds : 0; }
};

// Continuation of `prompt` (batch of one); returns the new tokens only.
std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& options, GenerateStats* stats = nullptr);

// Greedy continuation of `prompt`; stops after a stop id (which is included) or max_new.
std::vector<int64_t> greedy_generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                                     int64_t max_new_tokens, const std::vector<int64_t>& stop_ids);

// HF's RepetitionPenaltyLogitsProcessor on one row of logits [vocab]: for each distinct token
// in `seen`, a positive logit is divided by `penalty`, a negative one multiplied by it.
at::Tensor apply_repetition_penalty(const at::Tensor& logits, const std::vector<int64_t>& seen, double penalty);

// The next token from the last position's logits [vocab] given the sequence so far: the
// repetition penalty, then greedy argmax, or temperature, top-k, top-p (HF's order) and a
// draw from `gen`.
int64_t choose_next_token(const at::Tensor& logits, const std::vector<int64_t>& seq, const GenerateOptions& options,
                          at::Generator& gen);

}  // namespace ftrun::runtime
