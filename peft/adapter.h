// peft/adapter.h: the one reader of a PEFT adapter directory (adapter_config.json +
// adapter_model.safetensors + the base model it names). Training (adapter_name_or_path),
// generate / chat / eval and merge all read adapters through it, so the file names and the
// rules for finding the base model live in one place.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>

namespace ftrun::peft {

class Strategy;

constexpr const char* kAdapterConfigFile = "adapter_config.json";
constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";

struct AdapterDir {
  std::filesystem::path dir;
  nlohmann::json config;        // adapter_config.json as written (PEFT's keys)
  std::string peft_type;        // "LORA", "PREFIX_TUNING", ... ("" when absent)
  std::string base_model_path;  // base_model_name_or_path ("" when absent)

  std::filesystem::path config_path() const { return dir / kAdapterConfigFile; }
  std::filesystem::path weights_path() const { return dir / kAdapterWeightsFile; }
  // The base model directory: `override` when given, else base_model_name_or_path. An error
  // naming adapter_config.json when it has no config.json ("pass --base DIR").
  std::string base_dir(const std::string& override = "") const;
};

// Whether dir holds an adapter_config.json.
bool is_adapter_dir(const std::filesystem::path& dir);

// Reads dir/adapter_config.json (errors name the file: missing, invalid JSON, not an object).
AdapterDir read_adapter_dir(const std::filesystem::path& dir);

// The strategy that loads this adapter (for generate / eval / a continued run). A saved
// prefix is the encoder's output (PEFT stores no projection weights), so it is read back as
// a plain, unprojected prefix.
std::unique_ptr<Strategy> strategy_for_adapter(const AdapterDir& adapter);

}  // namespace ftrun::peft
