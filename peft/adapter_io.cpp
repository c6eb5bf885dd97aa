// Writing PEFT adapter directories, shared by the adapter strategies (see strategy.h).
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "io/file.h"
#include "models/safetensors.h"
#include "peft/adapter.h"
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
  st::save((fs::path(dir) / kAdapterWeightsFile).string(), out);
  io::write_json_atomic(fs::path(dir) / kAdapterConfigFile, config);
}

}  // namespace ftrun::peft
