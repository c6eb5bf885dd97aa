// Metrics file and terminal progress (see metrics.h).
#include "runtime/metrics.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "io/file.h"

namespace ftrun::runtime {

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  std::string kept;
  if (keep_through_step >= 0 && std::filesystem::exists(path)) {
    std::istringstream in(io::read_text_file(path, "metrics file"));
    std::string line;
    while (std::getline(in, line)) {
      // A torn last line (a killed run) parses as nothing and is dropped.
      const auto r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (r.is_object() && r.contains("step") && r["step"].is_number_integer() &&
          r["step"].get<int64_t>() <= keep_through_step)
        kept += line + "\n";
    }
  }
  io::write_file_atomic(path, kept);
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) throw std::runtime_error(path + ": cannot open metrics file: " + std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const nlohmann::json& record) {
  auto line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw std::runtime_error(path_ + ": cannot write metrics: " + std::strerror(errno));
}

std::string format_record(const nlohmann::json& r) {
  std::ostringstream os;
  bool first = true;
  for (const auto& kv : r.items()) {
    os << (first ? "" : " | ") << kv.key() << " ";
    first = false;
    const auto& v = kv.value();
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (d != 0 && (std::abs(d) < 1e-3 || std::abs(d) >= 1e5)) os << std::scientific << std::setprecision(3) << d;
      else os << std::fixed << std::setprecision(4) << d;
      os.unsetf(std::ios::floatfield);
    } else {
      os << v.dump();
    }
  }
  return os.str();
}

Progress::Progress(int64_t total, bool enabled)
    : total_(total), enabled_(enabled), tty_(enabled && isatty(STDOUT_FILENO)),
      start_(std::chrono::steady_clock::now()) {}

namespace {
std::function<void(int64_t, int64_t)>& progress_observer() {
  static std::function<void(int64_t, int64_t)> observer;
  return observer;
}
}  // namespace

void set_progress_observer(std::function<void(int64_t, int64_t)> observer) {
  progress_observer() = std::move(observer);
}

void Progress::step(int64_t done) {
  if (auto& observe = progress_observer()) observe(done, total_);
  if (!tty_) return;
  const int width = 30;
  int filled = total_ > 0 ? int(width * done / total_) : width;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::printf("\r[%s%s] %lld/%lld %.1fs %s", std::string(filled, '#').c_str(),
              std::string(width - filled, '.').c_str(), (long long)done, (long long)total_, secs,
              last_.c_str());
  std::fflush(stdout);
}

void Progress::log(const nlohmann::json& record) {
  if (!enabled_) return;
  auto line = format_record(record);
  if (tty_) {
    std::printf("\r\033[K%s\n", line.c_str());
  } else {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

void Progress::finish() {
  if (tty_) std::printf("\n");
  std::fflush(stdout);
}

}  // namespace ftrun::runtime
