// io/output.cpp: output markers and the replace check (see output.h).
#include "io/output.h"

#include <nlohmann/json.hpp>

#include <stdexcept>

#include "io/file.h"

namespace fs = std::filesystem;

namespace ftrun::io {

void write_output_marker(const fs::path& dir, const std::string& kind, const std::string& by) {
  write_json_atomic(dir / kOutputMarker, {{"kind", kind}, {"by", by}});
}

std::string output_kind(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / kOutputMarker, ec)) return "";
  try {
    const auto j = read_json_file(dir / kOutputMarker);
    return j.is_object() && j.contains("kind") && j["kind"].is_string() ? j["kind"].get<std::string>() : "";
  } catch (const std::exception&) {
    return "";
  }
}

bool path_within(const fs::path& path, const fs::path& dir) {
  std::error_code ec;
  const auto p = fs::weakly_canonical(fs::absolute(path), ec).lexically_normal();
  const auto d = fs::weakly_canonical(fs::absolute(dir), ec).lexically_normal();
  // Compare component by component ("out2" is not inside "out"); a trailing "/" is an empty one.
  auto pi = p.begin();
  for (auto di = d.begin(); di != d.end(); ++di) {
    if (di->empty()) continue;
    if (pi == p.end() || *pi != *di) return false;
    ++pi;
  }
  return true;
}

void check_replaceable(const fs::path& target, const std::string& kind, const std::string& what, bool overwrite,
                       const std::string& flag, const std::function<bool(const fs::path&)>& ours) {
  std::error_code ec;
  if (overwrite || !fs::exists(fs::symlink_status(target, ec))) return;
  if (fs::is_directory(target, ec) && (fs::is_empty(target, ec) || output_kind(target) == kind)) return;
  if (ours && ours(target)) return;
  throw std::runtime_error(target.string() + ": exists and is not " + what + " (" +
                           (fs::is_directory(target, ec) ? "a directory without a " + std::string(kOutputMarker) +
                                                               " marker of kind '" + kind + "'"
                                                         : std::string("a file")) +
                           "); refusing to replace it: choose another path, or " + flag + " to replace it");
}

}  // namespace ftrun::io
