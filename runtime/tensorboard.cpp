// TensorBoard event files (see tensorboard.h).
#include "runtime/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "io/file.h"
#include "runtime/config.h"
#include "tensorboard_event.pb.h"  // generated (runtime/CMakeLists.txt)

namespace fs = std::filesystem;

namespace ftrun::runtime {

namespace {

constexpr const char* kFileVersion = "brain.Event:2";  // TensorBoard's current version
constexpr const char* kEventFilePrefix = "events.out.tfevents.";

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected 0x1EDC6F41
      t[i] = c;
    }
    return t;
  }();
  return table;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}

uint64_t get_le(std::string_view b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(b[at + size_t(i)])) << (8 * i);
  return v;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// The temp sibling of an atomic rewrite (io::write_atomic: NAME.tmp.<pid>) is not one.
bool is_temp_file(const fs::path& p) { return p.filename().string().find(".tmp.") != std::string::npos; }
bool is_event_file(const fs::path& p) {
  return p.filename().string().rfind(kEventFilePrefix, 0) == 0 && !is_temp_file(p) && fs::is_regular_file(p);
}

std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& e : fs::directory_iterator(dir))
    if (is_event_file(e.path())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// The timestamp field of events.out.tfevents.<secs>.<host>...; -1 when the name has none.
long long name_seconds(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind(kEventFilePrefix, 0) != 0) return -1;
  const size_t start = std::strlen(kEventFilePrefix), end = name.find('.', start);
  const std::string digits = name.substr(start, end == std::string::npos ? end : end - start);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

tensorboard::Event parse_event(const std::string& payload, const fs::path& file) {
  tensorboard::Event ev;
  if (!ev.ParseFromString(payload))
    throw std::runtime_error(file.string() + ": a record is not a TensorBoard Event");
  return ev;
}

}  // namespace

uint32_t crc32c(std::string_view bytes) {
  const auto& t = crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) c = t[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  put_le(out, payload.size(), 8);
  put_le(out, masked_crc32c(out), 4);
  out.append(payload);
  put_le(out, masked_crc32c(payload), 4);
  return out;
}

std::vector<std::string> read_tfrecords(std::string_view b, std::string* tail_error) {
  std::vector<std::string> records;
  size_t at = 0;
  auto stop = [&](const std::string& why) {
    if (tail_error) *tail_error = "record " + std::to_string(records.size()) + " at byte " + std::to_string(at) + ": " + why;
    return records;
  };
  while (at < b.size()) {
    if (b.size() - at < 12) return stop("truncated length header");
    const uint64_t len = get_le(b, at, 8);
    if (uint32_t(get_le(b, at + 8, 4)) != masked_crc32c(b.substr(at, 8))) return stop("length CRC mismatch");
    if (b.size() - at - 12 < len + 4) return stop("truncated payload");
    const std::string_view payload = b.substr(at + 12, len);
    if (uint32_t(get_le(b, at + 12 + len, 4)) != masked_crc32c(payload)) return stop("payload CRC mismatch");
    records.emplace_back(payload);
    at += 12 + len + 4;
  }
  if (tail_error) tail_error->clear();
  return records;
}

std::string tensorboard_tag(const std::string& key) {
  if (key.rfind("eval_", 0) == 0) return "eval/" + key.substr(5);
  if (key.rfind("test_", 0) == 0) return "test/" + key.substr(5);
  return "train/" + key;
}

std::string default_logging_dir(const std::string& output_dir) {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  char stamp[64];
  // strftime("%b%d_%H-%M-%S") in the C locale, as Python's datetime prints it.
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::snprintf(stamp, sizeof stamp, "%s%02d_%02d-%02d-%02d", kMonths[local.tm_mon], local.tm_mday,
                local.tm_hour, local.tm_min, local.tm_sec);
  return (fs::path(output_dir) / "runs" / (std::string(stamp) + "_" + hostname())).string();
}

std::string resolve_logging_dir(const std::string& logging_dir, const std::string& output_dir,
                                bool resuming) {
  if (!logging_dir.empty()) return logging_dir;
  if (resuming) {
    const fs::path runs = fs::path(output_dir) / "runs";
    std::error_code ec;
    std::optional<std::pair<fs::file_time_type, fs::path>> newest;
    if (fs::is_directory(runs, ec)) {
      for (const auto& e : fs::directory_iterator(runs)) {
        if (!e.is_directory()) continue;
        for (const auto& f : event_files(e.path())) {
          const auto t = fs::last_write_time(f);
          if (!newest || t > newest->first) newest = std::make_pair(t, e.path());
        }
      }
    }
    if (newest) return newest->second.string();
  }
  return default_logging_dir(output_dir);
}

std::vector<TensorBoardScalar> read_tensorboard_scalars(const std::string& dir) {
  std::vector<TensorBoardScalar> out;
  for (const auto& f : event_files(dir)) {
    const std::string bytes = io::read_text_file(f, "TensorBoard event file");
    for (const auto& payload : read_tfrecords(bytes)) {
      const auto ev = parse_event(payload, f);
      if (!ev.has_summary()) continue;
      for (const auto& v : ev.summary().value())
        if (v.value_case() == tensorboard::Summary::Value::kSimpleValue)
          out.push_back({v.tag(), ev.step(), v.simple_value()});
    }
  }
  return out;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t start_step) : dir_(dir) {
  fs::create_directories(dir_);
  // A rewrite killed half-way leaves its temp file; TensorBoard would read it as events.
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.path().filename().string().rfind(kEventFilePrefix, 0) == 0 && is_temp_file(e.path())) fs::remove(e.path());
  // The existing files: keep what is at or before start_step (a crash's torn tail goes too).
  long long last_seconds = -1;
  for (const auto& f : event_files(dir_)) {
    last_seconds = std::max(last_seconds, name_seconds(f));
    const std::string bytes = io::read_text_file(f, "TensorBoard event file");
    std::string tail_error;
    const auto payloads = read_tfrecords(bytes, &tail_error);
    std::string kept;
    bool dropped = !tail_error.empty();
    for (const auto& payload : payloads) {
      const auto ev = parse_event(payload, f);
      if (ev.has_summary() && ev.step() > start_step) {
        dropped = true;
        continue;
      }
      if (ev.has_summary())
        for (const auto& v : ev.summary().value()) written_.insert({v.tag(), ev.step()});
      kept += tfrecord_frame(payload);
    }
    if (dropped) io::write_file_atomic(f, kept);
  }
  // A name after every existing one: a later second, then this host and pid.
  const long long secs = std::max<long long>(static_cast<long long>(std::time(nullptr)), last_seconds + 1);
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%010lld", secs);
  path_ = (fs::path(dir_) / (std::string(kEventFilePrefix) + stamp + "." + hostname() + "." +
                             std::to_string(getpid()) + ".0"))
              .string();
  f_ = std::fopen(path_.c_str(), "wb");
  if (!f_) throw std::runtime_error(path_ + ": cannot open TensorBoard event file: " + std::strerror(errno));
  tensorboard::Event header;
  header.set_wall_time(now_seconds());
  header.set_file_version(kFileVersion);
  header.mutable_source_metadata()->set_writer("ftrun");
  append(header.SerializeAsString());
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

void TensorBoardWriter::append(const std::string& event_bytes) {
  const std::string rec = tfrecord_frame(event_bytes);
  if (std::fwrite(rec.data(), 1, rec.size(), f_) != rec.size() || std::fflush(f_) != 0)
    throw std::runtime_error(path_ + ": cannot write TensorBoard event: " + std::strerror(errno));
}

void TensorBoardWriter::write(const nlohmann::json& record) {
  if (!record.contains("step") || !record["step"].is_number()) return;
  const int64_t step = record["step"].get<int64_t>();
  tensorboard::Event ev;
  ev.set_wall_time(now_seconds());
  ev.set_step(step);
  auto* summary = ev.mutable_summary();
  for (const auto& kv : record.items()) {
    if (kv.key() == "step" || !kv.value().is_number()) continue;
    const double v = kv.value().get<double>();
    if (!std::isfinite(v)) continue;  // metrics.jsonl holds null there
    const std::string tag = tensorboard_tag(kv.key());
    // An eval record repeats the train record's epoch at the same step: one train/epoch.
    if (!written_.insert({tag, step}).second) continue;
    auto* value = summary->add_value();
    value->set_tag(tag);
    value->set_simple_value(static_cast<float>(v));
  }
  if (summary->value_size() > 0) append(ev.SerializeAsString());
}

std::unique_ptr<TensorBoardWriter> open_tensorboard(const Config& cfg, int64_t start_step, bool resuming) {
  const TrainingArgs& args = cfg.training_args;
  if (std::find(args.report_to.begin(), args.report_to.end(), "tensorboard") == args.report_to.end())
    return nullptr;
  return std::make_unique<TensorBoardWriter>(
      resolve_logging_dir(args.logging_dir, args.output_dir, resuming), start_step);
}

}  // namespace ftrun::runtime
