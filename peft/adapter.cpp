// Reading PEFT adapter directories (see adapter.h).
#include "peft/adapter.h"

#include <stdexcept>

#include "io/file.h"
#include "peft/strategy.h"

namespace fs = std::filesystem;

namespace ftrun::peft {

bool is_adapter_dir(const fs::path& dir) { return fs::exists(dir / kAdapterConfigFile); }

AdapterDir read_adapter_dir(const fs::path& dir) {
  AdapterDir a;
  a.dir = dir;
  a.config = io::read_json_file(a.config_path(), "(expected a PEFT adapter directory)");
  if (!a.config.is_object()) throw std::runtime_error(a.config_path().string() + ": expected a JSON object");
  auto str = [&](const char* key) {
    auto it = a.config.find(key);
    if (it == a.config.end() || it->is_null()) return std::string();
    if (!it->is_string())
      throw std::runtime_error(a.config_path().string() + ": '" + key + "' must be a string, got " + it->dump());
    return it->get<std::string>();
  };
  a.peft_type = str("peft_type");
  a.base_model_path = str("base_model_name_or_path");
  return a;
}

std::string AdapterDir::base_dir(const std::string& override) const {
  std::string base = !override.empty() ? override : base_model_path;
  if (base.empty() || !fs::exists(fs::path(base) / "config.json"))
    throw std::runtime_error(config_path().string() + ": base model '" + base +
                             "' not found (pass --base DIR to point at it)");
  return base;
}

std::unique_ptr<Strategy> strategy_for_adapter(const AdapterDir& adapter) {
  nlohmann::json j = adapter.config;
  if (adapter.peft_type == "PREFIX_TUNING") j["prefix_projection"] = false;
  try {
    return make_strategy(j);
  } catch (const std::exception& e) {
    throw std::runtime_error(adapter.config_path().string() + ": " + e.what());
  }
}

}  // namespace ftrun::peft
