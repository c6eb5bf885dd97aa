// Fuzz target `config`: the YAML config loader with --set overrides (runtime/config.cpp
// load_config). Input: the YAML file, optionally followed by a line "# --set" and then one
// override KEY=VALUE per line (a YAML comment, so every plain config is a valid input too).
#include "runtime/config.h"
#include "tests/fuzz/fuzz_util.h"

FTRUN_FUZZ_TARGET(config) {
  const auto parts = ftrun::fuzz::split({reinterpret_cast<const char*>(data), size}, "\n# --set\n");
  std::vector<std::string> overrides;
  if (parts.size() > 1)
    for (const auto& line : ftrun::fuzz::split(parts[1], "\n"))
      if (!line.empty()) overrides.push_back(line);
  const auto path = ftrun::fuzz::scratch_dir() / "config.yaml";
  ftrun::fuzz::write_file(path, parts[0]);
  return ftrun::fuzz::outcome([&] {
    const auto cfg = ftrun::runtime::load_config(path.string(), overrides);
    (void)ftrun::runtime::config_to_json(cfg).dump();  // every field of the result is readable
  });
}
