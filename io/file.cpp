// io/file.cpp: atomic writes and checked reads (see file.h for the contract).
#include "io/file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace ftrun::io {
namespace {

[[noreturn]] void fail(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

std::string errno_text() { return std::strerror(errno); }

std::string squote(const std::string& s) { return "'" + s + "'"; }

// Temp files "<name>.tmp.<pid>.<n>" of `path` left by writers that died mid-write (SIGKILL,
// power loss: no chance to unlink them). Removed before the next write of the same target so
// they never pile up; one whose process is still alive on this host is left alone.
void remove_stale_temps(const fs::path& path) {
  const fs::path parent = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  const std::string prefix = path.filename().string() + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());  // "<pid>.<n>"
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == rest.size()) continue;
    if (rest.find_first_not_of("0123456789.") != std::string::npos) continue;
    const long pid = std::atol(rest.substr(0, dot).c_str());
    if (pid <= 0 || pid == long(::getpid())) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    std::error_code rm;
    fs::remove(it->path(), rm);
  }
}

}  // namespace

void write_all(int fd, const void* data, size_t n, const fs::path& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, "write failed: " + errno_text());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(p, "cannot open for fsync: " + errno_text());
  int rc = ::fsync(fd);
  const std::string reason = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) fail(p, "fsync failed: " + reason);
}

void fsync_tree(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) fsync_path(e.path());
  fsync_path(dir);
}

void write_atomic(const fs::path& path, const std::function<void(int fd)>& fill) {
  const fs::path parent = path.parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::is_directory(parent, ec))
    fail(path, "cannot write: directory " + squote(parent.string()) + " does not exist");
  remove_stale_temps(path);
  // Unique per process and call: two threads writing the same target never share a temp file.
  static std::atomic<unsigned> counter{0};
  const std::string tmp =
      path.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create temporary file " + squote(tmp) + ": " + errno_text());
  try {
    fill(fd);
    if (::fsync(fd) != 0) fail(path, "fsync failed: " + errno_text());
    if (::close(fd) != 0) {
      fd = -1;
      fail(path, "close failed: " + errno_text());
    }
    fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, "cannot rename " + squote(tmp) + " to it: " + errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(parent);
}

void write_file_atomic(const fs::path& path, std::string_view bytes) {
  write_atomic(path, [&](int fd) { write_all(fd, bytes.data(), bytes.size(), path); });
}

void write_json_atomic(const fs::path& path, const nlohmann::json& j, int indent) {
  write_file_atomic(path, j.dump(indent) + "\n");
}

namespace {

std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(n) / double(1ull << 20));
  else std::snprintf(buf, sizeof buf, "%llu bytes", (unsigned long long)n);
  return buf;
}

}  // namespace

// One pass over the text before nlohmann builds anything: the nesting depth (with the line
// where it is exceeded) and an upper bound of the values (containers + commas + 1), outside
// strings. Cheap next to the parse, and it fails before any memory is spent on the tree.
void check_json_shape(std::string_view text, const std::string& source, const ParseLimits& limits) {
  if (limits.max_depth <= 0 && limits.max_values == 0) return;
  bool in_string = false, escaped = false;
  int depth = 0;
  uint64_t values = 1, line = 1;
  const bool multiline = text.find('\n') != std::string_view::npos;  // a line number only where it helps
  for (char c : text) {
    if (c == '\n') ++line;
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        ++values;
        if (limits.max_depth > 0 && ++depth > limits.max_depth)
          throw std::runtime_error(source + (multiline ? ":" + std::to_string(line) : std::string()) + ": JSON nested deeper than " +
                                   std::to_string(limits.max_depth) + " levels (the limit for this kind of file)");
        break;
      case ']':
      case '}': --depth; break;
      case ',': ++values; break;
      default: break;
    }
    if (limits.max_values > 0 && values > limits.max_values)
      throw std::runtime_error(source + ": more than " + std::to_string(limits.max_values) +
                               " JSON values (the limit for this kind of file)");
  }
}

std::string read_text_file(const fs::path& path, const std::string& what, uint64_t max_bytes) {
  const std::string cannot = "cannot open" + (what.empty() ? std::string() : " " + what) + ": ";
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail(path, cannot + "is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, cannot + errno_text());
  const std::string limit = "the " + human_bytes(max_bytes) + " limit for " +
                            (what.empty() ? std::string("this kind of file") : what) + " (is it the right file?)";
  if (max_bytes > 0) {
    // A regular file's size is known up front; a pipe or a device is read up to the limit.
    const auto size = fs::file_size(path, ec);
    if (!ec && fs::is_regular_file(path, ec) && size > max_bytes)
      fail(path, human_bytes(size) + ", more than " + limit);
    std::string out;
    char buf[1 << 16];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      out.append(buf, size_t(in.gcount()));
      if (out.size() > max_bytes) fail(path, "longer than " + limit);
    }
    if (in.bad()) fail(path, "read error: " + errno_text());
    return out;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, "read error: " + errno_text());
  return ss.str();
}

nlohmann::json parse_json(std::string_view text, const std::string& source, const ParseLimits& limits) {
  if (limits.max_bytes > 0 && text.size() > limits.max_bytes)
    throw std::runtime_error(source + ": " + human_bytes(text.size()) + ", more than the " + human_bytes(limits.max_bytes) +
                             " limit for this kind of JSON");
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    throw std::runtime_error(source + ": invalid JSON: the file is empty (expected a JSON document)");
  check_json_shape(text, source, limits);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(source + ": invalid JSON: " + e.what());
  }
}

std::string json_error_text(const std::exception& e) {
  std::string w = e.what();
  if (w.rfind("[json.exception.", 0) == 0) {
    const auto close = w.find("] ");
    if (close != std::string::npos) w.erase(0, close + 2);
  }
  return w;
}

nlohmann::json read_json_file(const fs::path& path, const std::string& what) {
  // trainer_state.json holds the whole log_history, which grows with the run.
  return read_json_file(path, what, path.filename() == "trainer_state.json" ? kLogJsonLimits : kSmallJsonLimits);
}

nlohmann::json read_json_file(const fs::path& path, const std::string& what, const ParseLimits& limits) {
  return parse_json(read_text_file(path, what, limits.max_bytes), path.string(), limits);
}

fs::path temp_sibling_dir(const fs::path& path) {
  const fs::path clean = path.has_filename() ? path : path.parent_path();  // "out/" names "out"
  return clean.parent_path() / ("." + clean.filename().string() + ".tmp");
}

void write_dir_atomic(const fs::path& path, const std::function<void(const fs::path& tmp)>& fill) {
  const fs::path tmp = temp_sibling_dir(path);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    fill(tmp);
    fsync_tree(tmp);
    fs::remove_all(path);
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fsync_dir(fs::absolute(path).parent_path());
}

}  // namespace ftrun::io
