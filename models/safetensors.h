// safetensors reader and writer (huggingface/safetensors format; rules in
// shared/reference/formats.md sec. 1).
//
// On disk: u64 little-endian header length N, then N bytes of JSON
//   {"__metadata__": {...}, "NAME": {"dtype": "F32", "shape": [..], "data_offsets": [B, E]}, ...}
// then the data buffer, tensors back to back (row-major, little-endian). A reader rejects:
// N > 100,000,000; bad JSON; duplicate names; tensors that do not tile the buffer from 0
// without gap or overlap; E-B != numel * itemsize; a file size != 8 + N + last E; an unknown
// dtype. Every error names the file and what is wrong.
//
// Sharded checkpoints: `model.safetensors.index.json` {"metadata": {"total_size": bytes},
// "weight_map": {name: file}}; files named model-00001-of-00003.safetensors (1-based).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ftrun::st {

struct TensorInfo {
  std::string name;
  std::string dtype;          // "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // relative to the start of the data buffer
};

// A memory-mapped safetensors file. Tensors are copied out on get() or read_into(), so the
// File may be closed afterwards.
class File {
 public:
  static std::shared_ptr<File> open(const std::string& path);  // validates the whole header
  ~File();
  File(const File&) = delete;  // owns the mapping
  File& operator=(const File&) = delete;
  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return infos_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  at::Tensor get(const std::string& name) const;  // throws naming file and tensor if absent
  const TensorInfo& info(const std::string& name) const;  // same error as get()
  // Streams tensor `name` into dst (same number of elements; the caller checks shapes), in
  // 64 MiB chunks: bytes are copied straight into a contiguous dst of the file's dtype, or
  // cast by copy_ through a chunk-sized temporary (the same values as get() + copy_). Each
  // chunk's pages of the mapping are dropped once copied (madvise), so loading a model this
  // way holds the model plus about one chunk, never a second copy. require_finite: each chunk,
  // once in dst, must hold no NaN or inf (one isfinite().all() per chunk of a floating dst),
  // else an error naming the file, the tensor and the first bad element.
  void read_into(const std::string& name, at::Tensor& dst, bool require_finite = false) const;

 private:
  File() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> infos_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes one file atomically (temp file + rename). Tensors are copied to the CPU if needed,
// made contiguous and written in the reference writer's order (decreasing dtype alignment,
// then name); the header is padded with spaces so the data starts 8-aligned. metadata
// defaults to {"format": "pt"}; an empty map omits "__metadata__".
void save(const std::string& path, const NamedTensors& tensors,
          const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Loads every tensor of a model directory or file: `model.safetensors`, or the files listed
// by `model.safetensors.index.json` (each listed file must exist and hold its names).
std::map<std::string, at::Tensor> load_all(const std::string& path_or_dir);

// Opens every file of a model directory or file as load_all does (same files, same checks
// and errors) without reading any tensor: each tensor name -> the file holding it.
std::map<std::string, std::shared_ptr<File>> open_all(const std::string& path_or_dir);

// Writes `model.safetensors`, or when the tensors exceed max_shard_bytes, greedy shards in
// the given order as model-0000i-of-0000n.safetensors plus the index (huggingface_hub rules).
// Creates dir if needed; model*.safetensors files and an index left by an earlier save are
// removed once the new files are written.
void save_model(const std::string& dir, const NamedTensors& tensors,
                uint64_t max_shard_bytes = 5'000'000'000ull);

// dtype string <-> ATen scalar type; throws on an unsupported one.
at::ScalarType to_scalar_type(const std::string& dtype);
std::string to_dtype_string(at::ScalarType t);

}  // namespace ftrun::st
