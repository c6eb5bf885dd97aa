// Name -> factory registry of strategies; the built-in plug-ins register on first use so
// that static linking cannot drop them.
#include <map>
#include <mutex>
#include <stdexcept>

#include "peft/adapter.h"
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
  return strategy_for_adapter(read_adapter_dir(dir));
}

}  // namespace ftrun::peft
