// runtime/run_setup.h: what `ftrun CONFIG` (train) and `ftrun eval` both build from a config
// before they run: the model's config, tokenizer and chat template, the pad id, the ZeRO stage
// (zero_stage, else the DeepSpeed file, parsed once), and the data files tokenized through the
// token cache with rank 0 building first. One place, so training and evaluation cannot drift
// apart in how they read a config or its data.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "models/config.h"
#include "runtime/config.h"
#include "runtime/evaluate.h"
#include "runtime/generate.h"

namespace ftrun::runtime {

struct RunSetup {
  const Config* cfg = nullptr;
  models::ModelConfig model_config;
  std::shared_ptr<const data::Tokenizer> tokenizer;
  std::shared_ptr<const data::ChatTemplate> chat_template;
  int64_t pad_id = 0;
  int zero_stage = 0;
  std::vector<std::string> warnings;  // the config's and the DeepSpeed file's, for rank 0 to print

  // The samples of a data file, tokenized through the token cache (output_dir/.ftrun_cache or
  // $FTRUN_CACHE_DIR). Collective: rank 0 builds the cache, then the others read it.
  std::vector<data::Sample> encode(const std::string& file, comm::Comm& comm) const;
  // The generation rows of a data file (prediction_rows); errors are prefixed with `key`
  // (e.g. "data_config.val_file").
  std::vector<PredictRow> rows(const std::string& file, const std::string& key) const;
  // Evaluation's generation options: generation_config's max_new_tokens, the template's and
  // the model's stop ids, per_device_eval_batch_size, and synced decoding at ZeRO-3 on several
  // ranks (every forward is collective there). max_new_tokens > 0 overrides generation_config
  // (which is then not read).
  PredictOptions predict_options(int world_size, int64_t max_new_tokens = 0) const;
};

// The pad id of a model: pad_token_id, else the first eos id, else 0.
int64_t pad_id_of(const models::ModelConfig& mc);

// Every token id the tokenizer (read from tokenizer_dir) or config.json can produce must be a
// row of the model's embedding (config.json's vocab_size / padded_vocab_size): otherwise the
// first batch holding it fails mid-training with libtorch's "index out of range in self".
// Throws naming the token and its id: "<tokenizer_dir>/tokenizer_config.json: special token
// '<|eot_id|>' has id 4040, beyond the model's vocabulary of 405 (vocab_size in
// <config.json>)"; config.json's bos/eos/pad ids likewise name their key. Called by
// setup_run and load_for_inference, where both are known, before any weight is loaded.
void check_token_ids(const models::ModelConfig& mc, const data::Tokenizer& tok, const std::string& tokenizer_dir);

// For training: model_dir's config.json and tokenizer; the template is chat_template, else
// the model family's. Errors when model_dir is not set.
RunSetup setup_run(const Config& cfg, int world_size);

// For evaluating a trained result: the loaded model's config, tokenizer and template.
RunSetup setup_run(const Config& cfg, int world_size, const Inference& inf);

}  // namespace ftrun::runtime
