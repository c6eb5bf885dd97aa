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
#include <cstdint>
#include <filesystem>
#include <exception>
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
// max_bytes (0: none) bounds what is read, also from a pipe or a device such as /dev/zero:
// "<path>: N MiB, more than the M MiB limit for <what> ...".
std::string read_text_file(const std::filesystem::path& path, const std::string& what = "",
                           uint64_t max_bytes = 0);

// Bounds a JSON input is parsed under (issue 16, "bounded parsing"), so a hostile or mistaken
// file fails at once with its name instead of exhausting memory or the stack. 0 = no bound.
// Values counts every object, array and scalar (an upper bound: members plus containers).
struct ParseLimits {
  uint64_t max_bytes;
  uint64_t max_values;
  int max_depth;
};
// Files of a few KB by nature: config.json, adapter_config.json, layout.json, DeepSpeed JSON,
// tokenizer_config.json, output markers. A few MB and 200k values are far above any real one.
inline constexpr ParseLimits kSmallJsonLimits{8ull << 20, 200'000, 64};
// trainer_state.json: its log_history grows with the run (HF's too: ~150 bytes a record).
inline constexpr ParseLimits kLogJsonLimits{256ull << 20, 20'000'000, 64};
// Data records and whole data files: as large as the data set is; only the nesting is bounded
// (tool schemas nest a dozen levels; deep nesting would exhaust the stack of code that walks it).
inline constexpr ParseLimits kDataJsonLimits{0, 0, 128};

// Parses `text` under `limits`. Throws "<source>: invalid JSON: <parser message>",
// "<source>: invalid JSON: the file is empty ...", "<source>:<line>: JSON nested deeper than N levels" or
// "<source>: more than N JSON values". `source` names the input (a path, or "path:line").
nlohmann::json parse_json(std::string_view text, const std::string& source, const ParseLimits& limits);

// parse_json's depth and value-count checks alone, without parsing (for callers that parse
// themselves and keep their own syntax-error wording). Text of several lines is located as
// `source:<line>` (from 1).
void check_json_shape(std::string_view text, const std::string& source, const ParseLimits& limits);

// A nlohmann exception's message without its "[json.exception.type_error.302] " prefix, for
// errors that name the file and key themselves: "key 'units' not found".
std::string json_error_text(const std::exception& e);

// The parsed file. Throws as read_text_file, or as parse_json. Without `limits`: those of a
// small file, trainer_state.json's of a log.
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& what = "");
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& what,
                              const ParseLimits& limits);

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
