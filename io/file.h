// io/: the one file-I/O layer at the bottom of ftrun (leveldb's Env idea). Every file ftrun
// writes that a reader may see goes through write_atomic(): a temp sibling, written in full,
// fsynced, renamed over the target, and the directory fsynced, so a reader (or a crash) sees
// either the old file or the new one, never half of one. Every JSON file ftrun reads goes
// through read_json_file(), whose errors name the file and what is wrong with it.
//
// Errors are std::runtime_error with the message "<path>: <what>" (the OS reason included).
// Depends on the C++ standard library and nlohmann_json only.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace ftrun::io {

// Calls fill(fd) on "<path>.tmp.<pid>.<n>" in the same directory (a rename is atomic only within
// one file system), then fsyncs, renames it over `path` and fsyncs the directory. On any
// failure the temp file is removed and the target is untouched. The directory must exist.
// Temp files of the same target left by a writer that died (its pid no longer alive on this
// host) are removed first, so they never pile up.
void write_atomic(const std::filesystem::path& path, const std::function<void(int fd)>& fill);

// write_atomic() of a byte string / of j.dump(indent) plus a newline.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);
void write_json_atomic(const std::filesystem::path& path, const nlohmann::json& j, int indent = 2);

// Writes all n bytes to fd (write() may be partial), or throws naming `path`.
void write_all(int fd, const void* data, size_t n, const std::filesystem::path& path);

// The whole file. Throws "<path>: cannot open[ <what>]: <reason>" (a directory too). `what`
// says what the file was expected to be, e.g. "DeepSpeed config (training_args.deepspeed)".
std::string read_text_file(const std::filesystem::path& path, const std::string& what = "");

// The parsed file. Throws as read_text_file, or "<path>: invalid JSON: <parser message>".
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& what = "");

// fsync of one file or directory (throws "<path>: fsync failed: <reason>"), and of every
// file below `dir` and `dir` itself (what a renamed directory needs to be durable).
void fsync_path(const std::filesystem::path& path);
void fsync_tree(const std::filesystem::path& dir);
// Best effort: some file systems refuse fsync on directories.
void fsync_dir(const std::filesystem::path& dir);

// "The temp sibling of path" for directories written whole and renamed into place
// (checkpoints): "<parent>/.<name>.tmp".
std::filesystem::path temp_sibling_dir(const std::filesystem::path& path);

// A directory written whole: fill(tmp) writes into temp_sibling_dir(path) (emptied first),
// which is then fsynced and renamed over `path` (an existing `path` is removed just before).
// On failure the temp directory is removed and `path` is untouched; one left by a killed
// writer is reused (emptied) by the next write. Whether `path` may be replaced at all is the
// caller's question (io/output.h).
void write_dir_atomic(const std::filesystem::path& path, const std::function<void(const std::filesystem::path& tmp)>& fill);

}  // namespace ftrun::io
