// safetensors reading (mmap + strict header validation) and writing (atomic, byte-compatible
// with the reference writer), plus HF-style sharded checkpoints. Rules: formats.md sec. 1.
#include "models/safetensors.h"

#include "io/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>
#include <torch/version.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this code copies it without byte swapping");

namespace ftrun::st {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr uint64_t kSchemaLimit = uint64_t{1} << 48;  // offsets and dims, per the JSON schema
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

std::string errno_text() { return std::strerror(errno); }

// The reference's Dtype enum in declaration order: its derived Ord (rank) is what the reference
// writer sorts by, so ties in alignment (F16 vs BF16) are broken the same way.
struct DtypeSpec {
  const char* name;
  int bits;
  std::optional<at::ScalarType> scalar;  // empty: known to safetensors, not to this libtorch
};

const std::vector<DtypeSpec>& dtype_table() {
  static const std::vector<DtypeSpec> table = {
      {"BOOL", 8, at::kBool},
      {"F4", 4, std::nullopt},
      {"F6_E2M3", 6, std::nullopt},
      {"F6_E3M2", 6, std::nullopt},
      {"U8", 8, at::kByte},
      {"I8", 8, at::kChar},
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
      {"F8_E5M2", 8, at::ScalarType::Float8_e5m2},
      {"F8_E4M3", 8, at::ScalarType::Float8_e4m3fn},
#else
      {"F8_E5M2", 8, std::nullopt},
      {"F8_E4M3", 8, std::nullopt},
#endif
      {"F8_E8M0", 8, std::nullopt},
      {"F8_E4M3FNUZ", 8, std::nullopt},
      {"F8_E5M2FNUZ", 8, std::nullopt},
      {"I16", 16, at::kShort},
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
      {"U16", 16, at::ScalarType::UInt16},
#else
      {"U16", 16, std::nullopt},
#endif
      {"F16", 16, at::kHalf},
      {"BF16", 16, at::kBFloat16},
      {"I32", 32, at::kInt},
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
      {"U32", 32, at::ScalarType::UInt32},
#else
      {"U32", 32, std::nullopt},
#endif
      {"F32", 32, at::kFloat},
      {"C64", 64, at::kComplexFloat},
      {"F64", 64, at::kDouble},
      {"I64", 64, at::kLong},
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
      {"U64", 64, at::ScalarType::UInt64},
#else
      {"U64", 64, std::nullopt},
#endif
  };
  return table;
}

// Index into dtype_table(), or -1.
int dtype_rank(const std::string& name) {
  const auto& t = dtype_table();
  for (size_t i = 0; i < t.size(); ++i)
    if (name == t[i].name) return static_cast<int>(i);
  return -1;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string offsets_text(uint64_t b, uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

std::string squote(const std::string& s) { return "'" + s + "'"; }

// nlohmann keeps one value when a key repeats; the callback sees every key, so duplicates are
// caught here (tensor names at depth 1, and fields inside entries or __metadata__ below it).
class DuplicateKeyCheck {
 public:
  bool operator()(int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        levels_.push_back({{}, levels_.empty() ? std::string() : levels_.back().last_key});
        break;
      case json::parse_event_t::object_end:
        if (!levels_.empty()) levels_.pop_back();
        break;
      case json::parse_event_t::key: {
        if (levels_.empty() || !parsed.is_string()) break;
        auto& level = levels_.back();
        const auto& key = parsed.get_ref<const std::string&>();
        if (!level.keys.insert(key).second && error_.empty()) {
          error_ = levels_.size() == 1
                       ? "duplicate tensor name " + squote(key) + " in header"
                       : "duplicate key " + squote(key) + " inside " + squote(level.owner) +
                             " in header";
        }
        level.last_key = key;
        break;
      }
      default:
        break;
    }
    return true;
  }
  const std::string& error() const { return error_; }

 private:
  struct Level {
    std::set<std::string> keys;
    std::string owner;
    std::string last_key;
  };
  std::vector<Level> levels_;
  std::string error_;
};

json parse_header(const std::string& path, const char* data, size_t n) {
  if (n == 0 || data[0] != '{') fail(path, "header does not start with '{' (not a JSON object)");
  // The callback is copied into the parser, so it records through a pointer.
  auto check = std::make_shared<DuplicateKeyCheck>();
  json header;
  try {
    header = json::parse(
        data, data + n,
        [check](int d, json::parse_event_t e, json& j) { return (*check)(d, e, j); });
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!check->error().empty()) fail(path, check->error());
  if (!header.is_object()) fail(path, "header is not a JSON object");
  return header;
}

uint64_t read_u64(const std::string& path, const std::string& tensor, const char* field,
                  const json& v) {
  if (!v.is_number_unsigned()) {
    const char* why = v.is_number_integer() ? "is negative" : "is not a non-negative integer";
    fail(path, "tensor " + squote(tensor) + " " + field + " entry " + v.dump() + " " + why);
  }
  return v.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& v) {
  if (!v.is_object()) fail(path, "tensor " + squote(name) + " entry is not a JSON object");
  TensorInfo info;
  info.name = name;

  auto dt = v.find("dtype");
  if (dt == v.end()) fail(path, "tensor " + squote(name) + " has no dtype");
  if (!dt->is_string()) fail(path, "tensor " + squote(name) + " dtype is not a string");
  info.dtype = dt->get<std::string>();
  const int rank = dtype_rank(info.dtype);
  if (rank < 0) fail(path, "tensor " + squote(name) + " has unknown dtype " + squote(info.dtype));

  auto sh = v.find("shape");
  if (sh == v.end()) fail(path, "tensor " + squote(name) + " has no shape");
  if (!sh->is_array()) fail(path, "tensor " + squote(name) + " shape is not an array");
  for (const auto& d : *sh) {
    const uint64_t dim = read_u64(path, name, "shape", d);
    if (dim >= kSchemaLimit)
      fail(path, "tensor " + squote(name) + " shape dimension " + std::to_string(dim) +
                     " exceeds 2^48");
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  auto off = v.find("data_offsets");
  if (off == v.end()) fail(path, "tensor " + squote(name) + " has no data_offsets");
  if (!off->is_array() || off->size() != 2)
    fail(path, "tensor " + squote(name) + " data_offsets is not an array [begin, end]");
  info.begin = read_u64(path, name, "data_offsets", (*off)[0]);
  info.end = read_u64(path, name, "data_offsets", (*off)[1]);
  if (info.begin > info.end)
    fail(path, "tensor " + squote(name) + " data_offsets " + offsets_text(info.begin, info.end) +
                   " has begin > end");

  uint64_t bits = static_cast<uint64_t>(dtype_table()[rank].bits);
  for (int64_t d : info.shape) {
    if (__builtin_mul_overflow(bits, static_cast<uint64_t>(d), &bits))
      fail(path, "tensor " + squote(name) + " shape " + shape_text(info.shape) + " is too large");
  }
  if (bits % 8 != 0)
    fail(path, "tensor " + squote(name) + " shape " + shape_text(info.shape) + " " + info.dtype +
                   " is " + std::to_string(bits) +
                   " bits, not a whole number of bytes (misaligned)");
  const uint64_t need = bits / 8;
  if (info.end - info.begin != need)
    fail(path, "tensor " + squote(name) + " data_offsets " + offsets_text(info.begin, info.end) +
                   " but shape " + shape_text(info.shape) + " " + info.dtype + " needs " +
                   std::to_string(need) + " bytes");
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& v) {
  std::map<std::string, std::string> out;
  if (v.is_null()) return out;  // the reference reads `null` as "no metadata"
  if (!v.is_object()) fail(path, "__metadata__ is not a JSON object (string -> string map)");
  for (const auto& [k, val] : v.items()) {
    if (!val.is_string())
      fail(path, "__metadata__ value for key " + squote(k) + " is not a string (" +
                     std::string(val.type_name()) + "); metadata must be a flat string map");
    out[k] = val.get<std::string>();
  }
  return out;
}

using io::write_all;

// Every safetensors file (and the index) is written through the io layer's atomic writer, so a
// reader never sees a half-written file.
void write_atomically(const std::string& path, const std::function<void(int)>& fill) { io::write_atomic(path, fill); }

uint64_t tensor_bytes(const at::Tensor& t) {
  return static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(t.element_size());
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

at::ScalarType to_scalar_type(const std::string& dtype) {
  const int rank = dtype_rank(dtype);
  if (rank < 0) throw std::runtime_error("unknown safetensors dtype " + squote(dtype));
  const auto& spec = dtype_table()[rank];
  if (!spec.scalar)
    throw std::runtime_error("safetensors dtype " + dtype + " has no equivalent in libtorch " +
                             TORCH_VERSION);
  return *spec.scalar;
}

std::string to_dtype_string(at::ScalarType t) {
  for (const auto& spec : dtype_table())
    if (spec.scalar && *spec.scalar == t) return spec.name;
  throw std::runtime_error(std::string("tensor dtype ") + c10::toString(t) +
                           " cannot be stored in safetensors");
}

// ---------------------------------------------------------------------------------------------
// Reader

std::shared_ptr<File> File::open(const std::string& path) {
  std::shared_ptr<File> f(new File());
  f->path_ = path;

  FdCloser fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) fail(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(path, "cannot stat: " + errno_text());
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a safetensors file");
  if (!S_ISREG(st.st_mode)) fail(path, "is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8)
    fail(path, "file is " + std::to_string(size) +
                   " bytes, shorter than the 8-byte header length (truncated or not safetensors)");

  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (map == MAP_FAILED) fail(path, "mmap failed: " + errno_text());
  f->map_ = map;  // from here on ~File unmaps, also when validation throws
  f->size_ = size;
  const char* base = static_cast<const char*>(map);

  uint64_t n = 0;
  std::memcpy(&n, base, 8);
  if (n > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(n) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes (corrupt or not safetensors)");
  if (n > size - 8)
    fail(path, "header length " + std::to_string(n) + " but only " + std::to_string(size - 8) +
                   " bytes follow the 8-byte prefix (file truncated?)");
  f->data_start_ = 8 + n;

  const json header = parse_header(path, base + 8, static_cast<size_t>(n));
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__")
      f->metadata_ = parse_metadata(path, value);
    else
      f->infos_.push_back(parse_entry(path, key, value));
  }

  // (begin, end) so that a zero-size tensor sitting at the start of a non-empty one sorts first.
  std::sort(f->infos_.begin(), f->infos_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& info : f->infos_) {
    if (info.begin > covered)
      fail(path, "gap in the data buffer: tensor " + squote(info.name) + " data_offsets " +
                     offsets_text(info.begin, info.end) + " begins at " +
                     std::to_string(info.begin) + " but " +
                     (prev ? "tensor " + squote(prev->name) + " ends at " + std::to_string(covered)
                           : std::string("the buffer starts at 0")));
    if (info.begin < covered)
      fail(path, "tensor " + squote(info.name) + " data_offsets " +
                     offsets_text(info.begin, info.end) + " overlap tensor " +
                     squote(prev->name) + " data_offsets " + offsets_text(prev->begin, prev->end));
    covered = info.end;
    prev = &info;
  }
  if (covered >= kSchemaLimit)
    fail(path, "data_offsets end " + std::to_string(covered) + " exceeds 2^48");
  const uint64_t expected = 8 + n + covered;
  if (size < expected)
    fail(path, "file truncated: header describes " + std::to_string(expected) +
                   " bytes (8 + header " + std::to_string(n) + " + data " +
                   std::to_string(covered) + ") but the file has " + std::to_string(size));
  if (size > expected)
    fail(path, "file not fully covered: " + std::to_string(size - expected) +
                   " trailing bytes after the data buffer (file is " + std::to_string(size) +
                   " bytes, header describes " + std::to_string(expected) + ")");

  for (size_t i = 0; i < f->infos_.size(); ++i) f->index_[f->infos_[i].name] = i;
  return f;
}

File::~File() {
  if (map_) ::munmap(map_, size_);
}

bool File::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& File::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    fail(path_, "no tensor named " + squote(name) + " (file has " +
                    std::to_string(infos_.size()) + " tensors)");
  return infos_[it->second];
}

at::Tensor File::get(const std::string& name) const {
  const TensorInfo& info = this->info(name);
  at::ScalarType type;
  try {
    type = to_scalar_type(info.dtype);
  } catch (const std::exception& e) {
    fail(path_, "tensor " + squote(name) + ": " + e.what());
  }
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(type).device(at::kCPU));
  const uint64_t bytes = info.end - info.begin;
  if (bytes > 0)
    std::memcpy(t.data_ptr(), static_cast<const char*>(map_) + data_start_ + info.begin, bytes);
  return t;
}

namespace {

// The first element of a contiguous buffer whose exponent bits are all ones (NaN or inf), or
// -1. A branch-free OR over blocks (the compiler vectorises it), about as fast as the copy
// itself; at::isfinite(...).all() costs ten times the read (a bool tensor and a reduction).
template <typename U>
int64_t first_all_ones_exponent(const void* data, int64_t n, U exponent) {
  const U* u = static_cast<const U*>(data);
  constexpr int64_t kBlock = 4096;
  auto scan = [&](int64_t b, int64_t e) -> int64_t {
    for (int64_t i = b; i < e; ++i)
      if ((u[i] & exponent) == exponent) return i;
    return -1;
  };
  int64_t b = 0;
  for (; b + kBlock <= n; b += kBlock) {
    // A max over a fixed trip count: vectorised even at -O2's cheap cost model.
    U m = 0;
    for (int64_t i = 0; i < kBlock; ++i) m = std::max<U>(m, U(u[b + i] & exponent));
    if (m == exponent) return scan(b, b + kBlock);
  }
  return scan(b, n);
}

int64_t first_nonfinite(const at::Tensor& t) {
  const int64_t n = t.numel();
  auto by_ops = [&t] {
    auto bad = at::logical_not(at::isfinite(t.reshape({-1}))).nonzero();
    return bad.numel() ? bad[0][0].item<int64_t>() : int64_t(-1);
  };
  // Off the CPU (a weight read into GPU memory) the check runs there: no host bytes to scan.
  if (!t.device().is_cpu()) return by_ops();
  switch (t.scalar_type()) {
    case at::kFloat: return first_all_ones_exponent<uint32_t>(t.data_ptr(), n, 0x7f800000u);
    case at::kBFloat16: return first_all_ones_exponent<uint16_t>(t.data_ptr(), n, 0x7f80u);
    case at::kHalf: return first_all_ones_exponent<uint16_t>(t.data_ptr(), n, 0x7c00u);
    case at::kDouble: return first_all_ones_exponent<uint64_t>(t.data_ptr(), n, 0x7ff0000000000000ull);
    default: return by_ops();
  }
}

}  // namespace

void File::read_into(const std::string& name, at::Tensor& dst, bool require_finite) const {
  const TensorInfo& info = this->info(name);
  const uint64_t bytes = info.end - info.begin;
  const char* src = static_cast<const char*>(map_) + data_start_ + info.begin;
  int64_t numel = 1;
  for (int64_t d : info.shape) numel *= d;
  if (numel != dst.numel())
    fail(path_, "tensor " + squote(name) + " has " + std::to_string(numel) + " elements, the destination " +
                    std::to_string(dst.numel()));
  bool same = false;
  try {
    same = to_scalar_type(info.dtype) == dst.scalar_type();
  } catch (const std::exception& e) {
    fail(path_, "tensor " + squote(name) + ": " + e.what());
  }
  // Drop pages just read from this process (they stay in the page cache): they are clean, so
  // MADV_DONTNEED only unmaps them; rounding out to whole pages is harmless (a neighbour's
  // page is simply read in again).
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  auto release = [page](const char* p, uint64_t n) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const uintptr_t hi = reinterpret_cast<uintptr_t>(p) + n;
    ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  };
  // NaN or inf in a loaded weight only shows up later as a NaN loss: it is refused here,
  // where the file and the tensor are known. Checked on what dst received (a cast to fp16
  // could overflow), one chunk at a time while it is in cache.
  const bool check = require_finite && at::isFloatingType(dst.scalar_type());
  auto check_finite = [&](const at::Tensor& part, int64_t offset) {
    if (!check || part.numel() == 0) return;
    const int64_t bad = first_nonfinite(part.is_contiguous() ? part : part.contiguous());
    if (bad < 0) return;
    const double v = part.reshape({-1})[bad].item<double>();
    fail(path_, "tensor " + squote(name) + " holds " + (std::isnan(v) ? "NaN" : "inf") + " (first at element " +
                    std::to_string(offset + bad) + " of " + std::to_string(numel) + "); the weights are damaged");
  };
  if (!dst.is_contiguous() || !dst.device().is_cpu()) {
    dst.copy_(get(name).view(dst.sizes()));
    if (bytes > 0) release(src, bytes);
    check_finite(dst, 0);
    return;
  }
  // In chunks of 64 MiB, each released once copied: the file's pages held by this process
  // stay under one chunk even for a 1.2 GB embedding. A cast goes through a chunk-sized
  // temporary (copy_ converts element by element, so chunking changes no value).
  constexpr uint64_t kChunk = uint64_t(64) << 20;
  const uint64_t item = numel > 0 ? bytes / uint64_t(numel) : 1;
  const int64_t per_chunk = int64_t(std::max<uint64_t>(1, kChunk / item));
  auto flat = dst.view({-1});
  const at::ScalarType file_type = same ? dst.scalar_type() : to_scalar_type(info.dtype);
  at::Tensor tmp;
  for (int64_t off = 0; off < numel; off += per_chunk) {
    const int64_t k = std::min<int64_t>(per_chunk, numel - off);
    const char* from = src + uint64_t(off) * item;
    if (same) {
      // Copied and checked 1 MiB at a time, so the check reads what the copy just left in
      // cache (about half the cost of checking the whole chunk afterwards).
      const int64_t per_piece = check ? std::max<int64_t>(1, int64_t((uint64_t(1) << 20) / item)) : k;
      for (int64_t p = 0; p < k; p += per_piece) {
        const int64_t kk = std::min(per_piece, k - p);
        std::memcpy(static_cast<char*>(dst.data_ptr()) + uint64_t(off + p) * item, from + uint64_t(p) * item,
                    uint64_t(kk) * item);
        check_finite(flat.narrow(0, off + p, kk), off + p);
      }
    } else {
      if (!tmp.defined()) tmp = at::empty({std::min<int64_t>(per_chunk, numel)}, at::TensorOptions().dtype(file_type));
      auto part = tmp.narrow(0, 0, k);
      std::memcpy(part.data_ptr(), from, uint64_t(k) * item);
      flat.narrow(0, off, k).copy_(part);
      check_finite(flat.narrow(0, off, k), off);
    }
    release(from, uint64_t(k) * item);
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

void save(const std::string& path, const NamedTensors& tensors,
          const std::map<std::string, std::string>& metadata) {
  struct Item {
    std::string name;
    at::Tensor t;
    std::string dtype;
    int rank;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail(path, "tensor name '__metadata__' is reserved");
    if (!seen.insert(name).second) fail(path, "duplicate tensor name " + squote(name));
    if (!tensor.defined()) fail(path, "tensor " + squote(name) + " is undefined");
    std::string dtype;
    try {
      dtype = to_dtype_string(tensor.scalar_type());
    } catch (const std::exception& e) {
      fail(path, "tensor " + squote(name) + ": " + e.what());
    }
    // The tensor stays where it is (a GPU's memory too) until its bytes are written.
    items.push_back({name, tensor.detach(), dtype, dtype_rank(dtype)});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.name < b.name;
  });

  std::string header = "{";
  try {
    bool first = true;
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      bool first_kv = true;
      for (const auto& [k, v] : metadata) {
        header += (first_kv ? "" : ",") + json(k).dump() + ":" + json(v).dump();
        first_kv = false;
      }
      header += "}";
      first = false;
    }
    uint64_t offset = 0;
    for (const auto& it : items) {
      const uint64_t end = offset + tensor_bytes(it.t);
      header += (first ? "" : ",") + json(it.name).dump() + ":{\"dtype\":\"" + it.dtype +
                "\",\"shape\":" + shape_text(it.t.sizes().vec()) + ",\"data_offsets\":[" +
                std::to_string(offset) + "," + std::to_string(end) + "]}";
      offset = end;
      first = false;
    }
  } catch (const json::exception& e) {
    fail(path, std::string("tensor name or metadata is not valid UTF-8: ") + e.what());
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxHeaderBytes)
    fail(path, "header would be " + std::to_string(header.size()) + " bytes, over the limit of " +
                   std::to_string(kMaxHeaderBytes));

  write_atomically(path, [&](int fd) {
    const uint64_t n = header.size();
    write_all(fd, &n, 8, path);
    write_all(fd, header.data(), header.size(), path);
    for (const auto& it : items) {
      const uint64_t bytes = tensor_bytes(it.t);
      if (bytes == 0) continue;
      // One tensor at a time in host memory (from a GPU: copied here, freed after the write);
      // lazy conj/neg views materialised: the bytes written are the values the tensor shows.
      const at::Tensor host = it.t.to(at::kCPU).resolve_conj().resolve_neg().contiguous();
      write_all(fd, host.data_ptr(), bytes, path);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Model directories

namespace {

std::map<std::string, std::shared_ptr<File>> open_index(const fs::path& index_path) {
  const std::string ipath = index_path.string();
  json index;
  {
    std::ifstream in(index_path);
    if (!in) fail(ipath, "cannot open: " + errno_text());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Bounded as every small JSON file ftrun reads (issue 16): a real index names a few
    // thousand tensors; the checks throw naming the file.
    io::check_json_shape(text, ipath, io::kSmallJsonLimits);
    try {
      index = json::parse(text);
    } catch (const json::exception& e) {
      fail(ipath, std::string("not valid JSON: ") + e.what());
    }
  }
  if (!index.is_object()) fail(ipath, "not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) fail(ipath, "has no \"weight_map\" object");

  // file -> names, so each shard is opened once.
  std::map<std::string, std::vector<std::string>> by_file;
  for (const auto& [name, file] : wm->items()) {
    if (!file.is_string())
      fail(ipath, "weight_map entry for " + squote(name) + " is not a file name string");
    by_file[file.get<std::string>()].push_back(name);
  }

  std::map<std::string, std::shared_ptr<File>> out;
  const fs::path dir = index_path.parent_path();
  for (const auto& [file, names] : by_file) {
    const fs::path shard = dir / file;
    std::error_code ec;
    if (!fs::is_regular_file(shard, ec))
      fail(ipath, "weight_map lists " + squote(file) + " (for tensor " + squote(names.front()) +
                      ") but " + shard.string() + " does not exist");
    auto f = File::open(shard.string());
    for (const auto& name : names) {
      if (!f->contains(name))
        fail(ipath, "weight_map puts tensor " + squote(name) + " in " + squote(file) + " but " +
                        shard.string() + " does not contain it");
      out[name] = f;
    }
  }
  return out;
}

std::map<std::string, std::shared_ptr<File>> open_file(const std::string& path) {
  auto f = File::open(path);
  std::map<std::string, std::shared_ptr<File>> out;
  for (const auto& info : f->tensors()) out[info.name] = f;
  return out;
}

}  // namespace

std::map<std::string, std::shared_ptr<File>> open_all(const std::string& path_or_dir) {
  const fs::path p(path_or_dir);
  std::error_code ec;
  if (!fs::exists(p, ec)) fail(path_or_dir, "no such file or directory");
  if (!fs::is_directory(p, ec)) {
    const std::string fname = p.filename().string();
    if (fname.size() >= 11 && fname.compare(fname.size() - 11, 11, ".index.json") == 0)
      return open_index(p);
    return open_file(path_or_dir);
  }
  if (fs::exists(p / kIndexName, ec)) return open_index(p / kIndexName);
  if (fs::exists(p / kSingleName, ec)) return open_file((p / kSingleName).string());
  fail(path_or_dir, std::string("directory has neither ") + kIndexName + " nor " + kSingleName);
}

std::map<std::string, at::Tensor> load_all(const std::string& path_or_dir) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, file] : open_all(path_or_dir)) out[name] = file->get(name);
  return out;
}

void save_model(const std::string& dir, const NamedTensors& tensors, uint64_t max_shard_bytes) {
  {
    std::set<std::string> seen;
    for (const auto& nt : tensors)
      if (!seen.insert(nt.first).second) fail(dir, "duplicate tensor name " + squote(nt.first));
  }
  const fs::path d(dir);
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) fail(dir, "cannot create directory: " + ec.message());

  // huggingface_hub split_state_dict_into_shards_factory: greedy in the given order; a tensor
  // over the limit is closed off into its own shard right away while the open shard stays open.
  std::vector<NamedTensors> shards;
  NamedTensors current;
  uint64_t current_bytes = 0, total = 0;
  for (const auto& nt : tensors) {
    if (!nt.second.defined()) fail(dir, "tensor " + squote(nt.first) + " is undefined");
    const uint64_t bytes = tensor_bytes(nt.second);
    total += bytes;
    if (bytes > max_shard_bytes) {
      shards.push_back({nt});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(nt);
    current_bytes += bytes;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));

  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  std::set<std::string> written;
  if (shards.size() == 1) {
    save((d / kSingleName).string(), shards[0], meta);
    written.insert(kSingleName);
  } else {
    const size_t n = shards.size();
    json weight_map = json::object();
    for (size_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      save((d / name).string(), shards[i], meta);
      written.insert(name);
      for (const auto& nt : shards[i]) weight_map[nt.first] = name;
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    const std::string ipath = (d / kIndexName).string();
    write_atomically(ipath, [&](int fd) { write_all(fd, text.data(), text.size(), ipath); });
    written.insert(kIndexName);
  }

  // Files of an earlier save would otherwise be mixed in by load_all (a stale index wins over a
  // fresh model.safetensors). They are removed only after the new set is complete.
  static const std::regex shard_re(R"(model-\d{5}-of-\d{5}\.safetensors)");
  for (const auto& entry : fs::directory_iterator(d, ec)) {
    const std::string fname = entry.path().filename().string();
    if (written.count(fname)) continue;
    if (fname == kIndexName || fname == kSingleName || std::regex_match(fname, shard_re))
      fs::remove(entry.path(), ec);
  }
}

}  // namespace ftrun::st
