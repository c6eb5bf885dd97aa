// TensorBoard event files for `training_args.report_to: tensorboard` (HF's TensorBoardCallback):
// rank 0 writes the scalars of every metrics.jsonl record into `logging_dir` as TensorBoard's
// own Event protos (runtime/tensorboard_event.proto, the same messages and field numbers as
// TensorBoard's event.proto / summary.proto, encoded by Debian's libprotobuf) in TFRecord
// framing (length, masked CRC32C of the length, payload, masked CRC32C of the payload).
//
// Tags are HF's rewrite_logs(): eval_x -> eval/x, test_x -> test/x, anything else -> train/x;
// every finite number of a record but `step` is written at that record's step, as a float32
// simple_value (what HF's SummaryWriter.add_scalar writes).
//
// No duplicates, resumed or not: TensorBoard's EventAccumulator returns every event it reads,
// so two files in one directory holding the same tag at the same step show both. When a run
// starts at step S (0, or the checkpoint's step on --resume), the events after S in the
// directory's existing files belong to the run this one replaces: they are removed (each
// file rewritten atomically), and a (tag, step) still present is never written again. The new
// events go to a new file whose name sorts after the existing ones (TensorBoard reads a
// directory's files in name order).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ftrun::runtime {

struct Config;

// CRC32C (Castagnoli polynomial, as iSCSI, RFC 3720) and TFRecord's masked form of it:
// ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t crc32c(std::string_view bytes);
uint32_t masked_crc32c(std::string_view bytes);

// One TFRecord around `payload`.
std::string tfrecord_frame(std::string_view payload);

// The payloads of a TFRecord file's bytes, in order. A truncated or corrupt record ends the
// list (a run killed mid-write leaves one at the tail); *tail_error then says what was wrong.
std::vector<std::string> read_tfrecords(std::string_view bytes, std::string* tail_error = nullptr);

// HF's TensorBoard tag of a metrics.jsonl key (rewrite_logs).
std::string tensorboard_tag(const std::string& key);

// HF's default logging_dir under output_dir: runs/<%b%d_%H-%M-%S>_<hostname>
// (transformers' default_logdir(), local time).
std::string default_logging_dir(const std::string& output_dir);

// The directory a run logs to: training_args.logging_dir when set; else, on a resumed run,
// the most recently written output_dir/runs/* directory that holds event files (so the
// resumed scalars continue the same TensorBoard run); else a new default_logging_dir().
std::string resolve_logging_dir(const std::string& logging_dir, const std::string& output_dir,
                                bool resuming);

// A scalar read back from an event file (tests and the pruning on resume).
struct TensorBoardScalar {
  std::string tag;
  int64_t step;
  float value;
};
// Every scalar of every event file in `dir`, in file-name order then file order.
std::vector<TensorBoardScalar> read_tensorboard_scalars(const std::string& dir);

class TensorBoardWriter {
 public:
  // Removes the events after `start_step` from the event files already in `dir` (creating
  // `dir` if needed), then opens a new event file there with the file-version header.
  TensorBoardWriter(const std::string& dir, int64_t start_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // The scalars of one metrics record, as one Event at record["step"]; flushed.
  void write(const nlohmann::json& record);

  const std::string& dir() const { return dir_; }
  const std::string& path() const { return path_; }

 private:
  void append(const std::string& event_bytes);

  std::string dir_, path_;
  std::FILE* f_ = nullptr;
  std::set<std::pair<std::string, int64_t>> written_;  // (tag, step) already in the directory
};

// The writer for a run's rank 0 when training_args.report_to has tensorboard (nullptr
// otherwise), in resolve_logging_dir()'s directory.
std::unique_ptr<TensorBoardWriter> open_tensorboard(const Config& cfg, int64_t start_step,
                                                    bool resuming);

}  // namespace ftrun::runtime
