// runtime/data_preview.h: what `ftrun data CONFIG.yaml` shows (launcher/data_command.cpp is
// only its command line): a split's rows as training sees them, decoded with the tokens that
// carry loss marked, and the numbers a user checks before a run (cuts, lengths, loss share,
// padding).
//
// Nothing here renders or masks on its own. The samples are RunSetup::encode's (the trainer's
// call: same template, same max_input_length / max_output_length, same token cache), and bad
// rows fail there with training's own file:line / field error. For the statistics the rows
// are also encoded once more through data::encode_example with both lengths 0, which is the
// same template code without the final right cut; every trained sample is checked to be that
// uncut sample's first tmpl.max_length(opts) tokens (a mismatch is an error, never a wrong
// number). Padding comes from data::collate over the batches training builds.
//
// Definitions (also printed in the output):
//   loss-carrying token  labels[i] != -100 in the trained sample (what the display marks);
//   loss tokens (stats)  what the loss counts: labels != -100 at positions 1..T-1, as
//                        data::collate's num_label_tokens (label 0 has no position before it);
//   prompt / response    before the cut: the tokens before the first loss-carrying token, and
//                        from it to the end (a row with no loss token is all prompt);
//   percentiles          nearest rank: p = the smallest value with at least p% of rows <= it;
//   padding              train: one epoch of per_device_train_batch_size micro-batches in the
//                        trainer's order (epoch_order(n, seed, e), the last batch wrapping into
//                        the next epoch as the trainer's sample stream does), on one rank;
//                        val/test: per_device_eval_batch_size batches in file order (evaluation
//                        on one rank). Waste = padding slots / all slots (B x T summed).
// ftrun drops no row: a row longer than the cut loses its end, and one left without a loss
// token stays in its batch and trains nothing ("left without loss" below).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/chat_template.h"

namespace ftrun::comm {
class Comm;
}

namespace ftrun::runtime {

struct RunSetup;

// Nearest-rank percentiles of a set of lengths (all 0 when empty).
struct LengthStats {
  int64_t p50 = 0, p90 = 0, p99 = 0, max = 0;
};
LengthStats length_stats(std::vector<int64_t> values);

struct DataStats {
  int64_t rows = 0;
  int64_t max_input_length = 0, max_output_length = 0;
  int64_t cut_length = 0;  // tmpl.max_length(opts): where training cuts (0: no cut)
  // Rows longer than the cut: how many, tokens removed in all, most removed from one row, and
  // how many of the removed tokens carried loss.
  int64_t cut_rows = 0, cut_tokens = 0, cut_max = 0, cut_loss_tokens = 0;
  int64_t no_loss_rows = 0;  // rows with no loss token left after the cut (they train nothing)
  // Prompts longer than max_input_length / responses longer than max_output_length, before the
  // cut: how many rows, excess tokens in all, the largest excess. Informational: training
  // makes the one right cut above, not a cut per part.
  int64_t prompt_over = 0, prompt_over_tokens = 0, prompt_over_max = 0;
  int64_t response_over = 0, response_over_tokens = 0, response_over_max = 0;
  LengthStats prompt, response;  // before the cut
  LengthStats trained;           // sample length after the cut
  int64_t tokens = 0;            // all tokens of the trained samples
  int64_t loss_tokens = 0;       // as the loss counts them (see above)
  // Padding at batch_size: batches, B x T slots summed, slots holding padding.
  int64_t batch_size = 0, batches = 0, slots = 0, pad_slots = 0;
  std::string batch_size_key;  // "per_device_train_batch_size" or "per_device_eval_batch_size"
};

struct DataPreview {
  std::string split;  // train, val or test
  std::string file;   // the config's file for it (resolved against data_dir)
  std::vector<data::Sample> samples;  // exactly what training trains on, in file order
  std::vector<data::Sample> uncut;    // the same rows before the cut
  std::vector<std::string> where;     // file:line (or file[index]) of each row
  DataStats stats;
};

// The data file of a split: "train" -> data_config.train_file, "val" -> val_file, "test" ->
// test_file. Errors for another name or a split the config does not set.
std::string split_file(const RunSetup& setup, const std::string& split);

// Encodes the split as training does (RunSetup::encode on `comm`, building or reading the
// token cache) and computes its statistics. Bad rows throw training's error unchanged.
DataPreview preview_data(const RunSetup& setup, const std::string& split, comm::Comm& comm);

// One sample decoded for reading: special tokens spelled as they are (`<|user|>`), runs of
// loss-carrying tokens in [[ ]] (color = false) or bold green (color = true, ANSI). Text runs
// are decoded together, so a character split over byte tokens reads whole. Newlines and tabs
// print as they are; other control bytes and invalid UTF-8 as \xNN (data cannot write
// terminal escapes).
std::string render_sample(const data::Sample& s, const data::Tokenizer& tok, bool color);

// One line per token: position, id, label (-100 or the target id), a `*` on loss-carrying
// tokens, and the token decoded alone (escaped: \n, \t, \\, other control bytes as \xNN).
std::string render_tokens(const data::Sample& s, const data::Tokenizer& tok);

// The statistics block, as `ftrun data` prints it.
std::string format_stats(const DataStats& st);

struct PreviewFormat {
  int64_t show = 3;     // samples printed before the statistics
  bool color = false;   // ANSI colour instead of [[ ]]
  bool tokens = false;  // also the per-token listing under each sample
};

// The whole report: the shown samples (with file:line), then the statistics.
std::string format_preview(const DataPreview& p, const data::Tokenizer& tok, const PreviewFormat& f);

}  // namespace ftrun::runtime
