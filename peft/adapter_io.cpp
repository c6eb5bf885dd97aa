// Writing PEFT adapter directories, shared by the adapter strategies (see strategy.h).
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "models/safetensors.h"
#include "peft/strategy.h"

namespace fs = std::filesystem;

namespace ftrun::peft {

void write_adapter(const std::string& dir, const NamedTensors& tensors, const nlohmann::json& config) {
  fs::create_directories(dir);
  st::NamedTensors out;
  for (const auto& kv : tensors) {
    if (kv.second.numel() == 0) throw std::runtime_error(dir + ": refusing to save an empty adapter tensor " + kv.first);
    out.emplace_back(kv.first, kv.second.detach().to(at::kFloat).contiguous());
  }
  st::save((fs::path(dir) / "adapter_model.safetensors").string(), out);
  auto tmp = (fs::path(dir) / "adapter_config.json.tmp").string();
  {
    std::ofstream f(tmp);
    f << config.dump(2) << "\n";
    f.close();
    if (!f) throw std::runtime_error(tmp + ": write failed");
  }
  fs::rename(tmp, fs::path(dir) / "adapter_config.json");
}

}  // namespace ftrun::peft
