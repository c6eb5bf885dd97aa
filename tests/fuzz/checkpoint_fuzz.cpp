// Fuzz target `checkpoint`: a checkpoint's trainer_state.json and optimizer/layout.json, checked
// as a resume checks them (runtime/checkpoint.cpp: read_trainer_state, then checkpoint_damage,
// which reads both against COMPLETE, each other, the optimizer shard and the RNG file). Input:
// trainer_state.json, optionally followed by a line "//layout.json" and that file. The rest of
// checkpoint-3 is fixed: COMPLETE of the pre-checksum form ("3", so the JSON files and the
// consistency checks decide), rank 0's optimizer shard holding unit 0's range [0, 96), and rank
// 0's RNG file. Outcome: the read's error, then checkpoint_damage's finding.
#include <cstring>
#include <filesystem>

#include "runtime/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// A safetensors file of F32/U8 zeros: 8-byte header length, JSON header, data.
std::string zeros_file(const std::vector<std::pair<std::string, int>>& tensors, const std::string& dtype,
                       const std::string& metadata) {
  std::string header = "{\"__metadata__\":" + metadata, data;
  const int item = dtype == "F32" ? 4 : 1;
  for (const auto& [name, n] : tensors) {
    header += ",\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + std::to_string(n) +
              "],\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + n * item) + "]}";
    data.append(size_t(n) * item, '\0');
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  char len[8];
  const uint64_t n = header.size();
  std::memcpy(len, &n, 8);  // little-endian, as every machine ftrun runs on
  return std::string(len, 8) + header + data;
}

}  // namespace

FTRUN_FUZZ_TARGET(checkpoint) {
  namespace fz = ftrun::fuzz;
  static const std::string shard = zeros_file({{"unit.0.exp_avg", 96}, {"unit.0.exp_avg_sq", 96}}, "F32",
                                              R"({"format":"pt","ftrun_ranges":"{\"0\":[0,96]}"})");
  static const std::string rng = zeros_file({{"cpu", 16}}, "U8", R"({"format":"pt"})");
  const auto parts = fz::split({reinterpret_cast<const char*>(data), size}, "\n//layout.json\n");
  const auto dir = fz::scratch_dir() / "checkpoint-3";
  std::filesystem::create_directories(dir / "optimizer");
  std::filesystem::create_directories(dir / "rng");
  fz::write_file(dir / "COMPLETE", "3\n");
  fz::write_file(dir / "optimizer" / "rank-0.safetensors", shard);
  fz::write_file(dir / "rng" / "rank-0.safetensors", rng);
  fz::write_file(dir / "trainer_state.json", parts[0]);
  std::error_code ec;
  if (parts.size() > 1)
    fz::write_file(dir / "optimizer" / "layout.json", parts[1]);
  else
    std::filesystem::remove(dir / "optimizer" / "layout.json", ec);
  std::string damage;
  const std::string read = fz::outcome([&] {
    const auto state = ftrun::runtime::read_trainer_state(dir);
    // What was read is what was written: world_size 4294967297 is not 1 (to_json() writes every
    // field back; an integer it accepted must come back unchanged).
    const auto j = nlohmann::json::parse(parts[0]);
    const auto back = state.to_json();
    for (const char* key : {"global_step", "position", "world_size", "zero_stage", "seed"})
      if (j.contains(key) && j[key].is_number_integer() && j[key] != back[key]) std::abort();
  });
  const std::string checked = fz::outcome([&] { damage = ftrun::runtime::checkpoint_damage(dir); });
  // checkpoint_damage reports damage as its result; --resume yes relies on it never throwing
  // (it skips a damaged checkpoint and goes on to the next).
  if (!checked.empty()) std::abort();
  return read.empty() ? damage : read + " | " + damage;
}
