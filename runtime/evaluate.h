// Evaluation by generation (HF Seq2SeqTrainer's predict_with_generate, the GLM-4 demo's
// compute_metrics): each row of a split is a prompt (the conversation up to its last assistant
// turn) and a reference (that turn's text); the model continues every prompt greedily, and
// the predictions are scored with ROUGE-1/2/L and BLEU-4 (runtime/text_metrics.h).
//
// Across ranks, row i is generated on rank i % world, in batches (generate_batch), and the
// predictions are gathered to rank 0, which scores them. Under ZeRO-3 every forward is a
// collective, so the ranks run a synced loop (PredictOptions::synced): each decoding step
// all-reduces whether any rank still generates, and a rank with nothing left runs dummy
// forwards; ranks whose rows stop at different lengths, or that have fewer rows, never hang.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "models/model.h"
#include "runtime/generate.h"
#include "comm/comm.h"

namespace ftrun::runtime {

struct PredictRow {
  std::vector<int64_t> prompt;  // the token ids generation starts from
  std::string prompt_text;      // the prompt decoded with its special tokens
  std::string reference;        // the gold assistant reply
};

// The rows of a data file (any format data/dataset.h reads): prompt = the template's
// generation prompt after the messages before the last assistant message, reference = that
// message's content (stripped). glm4 follows the GLM-4 demo (data/templates/glm.h): its
// evaluation prompt cut to max_input_length, and with combine=false one row per assistant
// message while the context is shorter than max_input_length. A pre-tokenized record, a
// conversation without an assistant turn, or a file without rows is an error naming the
// file (and line).
std::vector<PredictRow> prediction_rows(const std::string& file, const data::ChatTemplate& tmpl,
                                        const data::Tokenizer& tok, int64_t max_input_length,
                                        bool combine = true);

struct PredictOptions {
  GenerateOptions generate;  // greedy unless do_sample; stop_ids from the template
  int64_t batch_size = 8;    // rows per generate_batch call on each rank
  bool synced = false;       // every rank makes the same forward calls (needed under ZeRO-3)
};

struct PredictResult {
  std::vector<std::string> predictions;   // rank 0: one per row, in row order; empty elsewhere
  std::map<std::string, double> scores;   // rank 0: rouge-1, rouge-2, rouge-l, bleu-4
  int64_t new_tokens = 0;                 // generated on all ranks
  double seconds = 0;                     // wall time of the whole prediction
};

// Generates and scores `rows` (see the file comment). Collective: every rank calls it with
// the same rows and options.
PredictResult predict(models::CausalLM& model, const std::vector<PredictRow>& rows, const data::Tokenizer& tok,
                      const PredictOptions& options, comm::Comm& comm);

// One JSON object per row: {"prompt", "reference", "prediction"}; written to a temp file and
// renamed. Errors name the path.
void write_predictions(const std::string& path, const std::vector<PredictRow>& rows,
                       const std::vector<std::string>& predictions);

// Each rank's string, gathered on every rank (rank r's at index r): byte tensors padded to
// the longest, after an all-gather of the lengths.
std::vector<std::string> all_gather_strings(comm::Comm& comm, const std::string& mine);

// Sum of token losses and label-token count of `samples` under `model` (no grad), in batches
// of batch_size; the trainer's evaluate_loss() divides one by the other.
std::pair<double, int64_t> loss_sum_and_count(models::CausalLM& model, const std::vector<data::Sample>& samples,
                                              int64_t batch_size, int64_t pad_id);

// The same over all ranks of `comm`: rank r takes samples r, r + world, ... and every rank
// runs the same number of forward calls (a rank out of samples repeats a batch and discards
// it), because under ZeRO-3 each forward is collective; sums are all-reduced, so every rank
// returns the totals of the whole split.
std::pair<double, int64_t> distributed_loss_sum_and_count(models::CausalLM& model,
                                                          const std::vector<data::Sample>& samples,
                                                          int64_t batch_size, int64_t pad_id, comm::Comm& comm);

// max_new_tokens for evaluation: training_args.generation_config.max_new_tokens, else the
// GLM-4 demo's 512. Anything but a positive integer is an error naming the key.
int64_t eval_max_new_tokens(const nlohmann::json& generation_config);

// Stop ids for evaluation: the template's, plus the model's eos_token_id list.
std::vector<int64_t> eval_stop_ids(const data::ChatTemplate& tmpl, const data::Tokenizer& tok,
                                   const models::ModelConfig& mc);

}  // namespace ftrun::runtime
