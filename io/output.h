// io/output.h: what ftrun may replace. ftrun writes its outputs (merged and tiny models,
// training output_dirs, eval predictions) over an existing target only when that target is
// ftrun's own output of the same kind, or the user said so explicitly (--overwrite,
// training_args.overwrite_output_dir): a user's notes, a downloaded model or an unrelated
// directory are never replaced by accident. Every output directory ftrun makes carries a
// marker file, .ftrun_output ({"kind": ..., "by": ...}), which is how a later run knows it.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace ftrun::io {

inline constexpr const char* kOutputMarker = ".ftrun_output";

// dir/.ftrun_output saying what wrote the directory (kind: "model", "training"; by: the command).
void write_output_marker(const std::filesystem::path& dir, const std::string& kind, const std::string& by);

// The kind in dir's marker; "" when there is none (or it is unreadable).
std::string output_kind(const std::filesystem::path& dir);

// Whether `path` is `dir` or lies below it, compared after resolving "..", "." and symlinks
// of the parts that exist.
bool path_within(const std::filesystem::path& path, const std::filesystem::path& dir);

// Throws "<target>: exists and is not <what> (...); refusing to replace it: ..., or <flag> to
// replace it" unless `target` may take a new ftrun output of `kind`: it does not exist, is an
// empty directory or one carrying a marker of `kind`, or `ours` (optional: how outputs without
// a marker are recognized, files or directories written before markers) says it is one.
// `overwrite` (the user's explicit flag, named by `flag`) allows anything.
void check_replaceable(const std::filesystem::path& target, const std::string& kind, const std::string& what,
                       bool overwrite, const std::string& flag,
                       const std::function<bool(const std::filesystem::path&)>& ours = {});

}  // namespace ftrun::io
