// Name -> factory registry of strategies; the built-in plug-ins register on first use so
// that static linking cannot drop them.
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>

#include "peft/strategy.h"

namespace ftrun::peft {

std::unique_ptr<Strategy> make_lora(const nlohmann::json& peft_config);
std::unique_ptr<Strategy> make_prefix_tuning(const nlohmann::json& peft_config);
std::unique_ptr<Strategy> make_full(const nlohmann::json& peft_config);

namespace {

std::map<std::string, Factory>& registry() {
  static std::map<std::string, Factory> r;
  static std::once_flag once;
  std::call_once(once, [] {
    r["LORA"] = make_lora;
    r["PREFIX_TUNING"] = make_prefix_tuning;
    r["FULL"] = make_full;
  });
  return r;
}

}  // namespace

void register_strategy(const std::string& peft_type, Factory factory) {
  registry()[peft_type] = std::move(factory);
}

std::unique_ptr<Strategy> make_strategy(const nlohmann::json& peft_config) {
  // No peft_config means full fine-tuning, as in the GLM-4 demo's sft.yaml.
  if (peft_config.is_null()) return make_full(peft_config);
  if (!peft_config.is_object() || !peft_config.contains("peft_type") ||
      !peft_config["peft_type"].is_string())
    throw std::runtime_error("peft_config: 'peft_type' (a string such as LORA) is required");
  auto type = peft_config["peft_type"].get<std::string>();
  auto& r = registry();
  auto it = r.find(type);
  if (it == r.end()) {
    std::string known;
    for (const auto& kv : r) known += (known.empty() ? "" : ", ") + kv.first;
    throw std::runtime_error("peft_config.peft_type: unknown strategy '" + type +
                             "' (known: " + known + ")");
  }
  return it->second(peft_config);
}

std::unique_ptr<Strategy> strategy_from_adapter_dir(const std::string& dir) {
  auto path = (std::filesystem::path(dir) / "adapter_config.json").string();
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open (expected a PEFT adapter directory)");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": invalid JSON: " + e.what());
  }
  // A saved prefix is the encoder's output (PEFT stores no projection weights), so it is
  // read back as a plain, unprojected prefix.
  if (j.value("peft_type", "") == "PREFIX_TUNING") j["prefix_projection"] = false;
  try {
    return make_strategy(j);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

}  // namespace ftrun::peft
