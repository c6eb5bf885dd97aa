// Inference: load a base model or a trained adapter directory, and generation with a KV
// cache (greedy or sampled, with HF's logits processors).
#pragma once
#include <ATen/core/Generator.h>

#include <cstdint>
#include <functional>
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
  std::shared_ptr<const data::Tokenizer> tokenizer;          // shared with a RunSetup (eval)
  std::shared_ptr<const data::ChatTemplate> chat_template;
  std::unique_ptr<peft::Strategy> strategy;  // null for a plain model
  std::string base_dir;
};

// Called by load_for_inference once config.json, the tokenizer and the chat template are
// read, before any weight is: a caller's checks of its input (generate's prompt length)
// refuse it before the model is allocated.
using BeforeWeights =
    std::function<void(const models::ModelConfig&, const data::Tokenizer&, const data::ChatTemplate&)>;

// `path` is an HF model directory, or a PEFT adapter directory whose
// base_model_name_or_path (or `base_override`) names the base. The tokenizer comes from
// `path` when it holds one (ftrun copies it into every output), else from the base. Special
// token ids beyond config.json's vocabulary are an error (check_token_ids, run_setup.h)
// before the weights are loaded.
// `torch_dtype` is the training config's key (runtime/precision.h; `ftrun eval` passes it):
// the base is held in that dtype, adapters stay fp32 as in training. generate and chat load in
// float32, transformers 4.x's from_pretrained default. `device`: where the model is loaded
// (`ftrun eval` passes its config's, runtime/device.h; generate and chat run on the CPU).
Inference load_for_inference(const std::string& path, const std::string& base_override = "",
                             const std::string& template_override = "", const BeforeWeights& before_weights = nullptr,
                             const std::string& torch_dtype = "float32",
                             c10::Device device = c10::Device(c10::kCPU));

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

// Refuses options generation cannot use, naming the field and the value: repetition_penalty
// not > 0 (or not finite); when sampling, temperature not > 0 (NaN included) or not finite,
// top_p outside (0, 1], top_k < 0. The CLI checks its flags first (naming the flag); this
// guards every other caller.
void check_generate_options(const GenerateOptions& options);

// ftrun generate refuses (does not cut) a prompt longer than the model's context:
// "the prompt is N tokens, longer than the model's context of C tokens (<key> in
// <config.json>)". A prompt of exactly C tokens is accepted (one new token fits).
void check_prompt_fits(const models::ModelConfig& config, int64_t prompt_tokens);

struct GenerateStats {
  double first_token_seconds = 0;  // prompt processing + first token
  double total_seconds = 0;
  int64_t new_tokens = 0;
  double tokens_per_second() const { return total_seconds > 0 ? new_tokens / total_seconds : 0; }
};

// Continuation of `prompt` (batch of one); returns the new tokens only. The options and the
// prompt's length are checked first (check_generate_options, check_prompt_fits).
std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& options, GenerateStats* stats = nullptr);

// Each prompt continued as generate() continues it alone, all rows in one batch: prompts
// left-padded, an attention mask, one KV cache; each row stops after its own stop id (which
// is included) or max_new_tokens (or when it reaches the model's max_position_embeddings);
// a finished row is fed padding from then on. Greedy rows equal generate() on the row alone;
// a sampled row r draws from its own generator seeded options.seed + r. Needs use_cache
// (without it each row is run by generate()). `stats` sums over rows.
//
// keep_going, when given, makes the loop collective (ZeRO-3, where every forward is): it is
// called once per decoding step with whether this process still has a row generating and
// must return whether any process has (an all-reduce); the loop runs while it says so, and a
// process with nothing left to generate (or no prompts at all) runs a dummy one-token
// forward instead, so every process makes the same number of forward calls.
std::vector<std::vector<int64_t>> generate_batch(models::CausalLM& model,
                                                 const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerateOptions& options,
                                                 const std::function<bool(bool)>& keep_going = nullptr,
                                                 GenerateStats* stats = nullptr);

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
