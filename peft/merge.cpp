// LoRA merge (see merge.h). The adapter file is read directly rather than through the LoRA
// Strategy, because applying the strategy would register lora_A/lora_B modules and install
// forward deltas on the model, which a merged model must not carry.
#include "peft/merge.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "models/safetensors.h"
#include "peft/adapter.h"
#include "peft/lora.h"

namespace fs = std::filesystem;

namespace ftrun::peft {

std::vector<std::string> merge_lora(models::CausalLM& model, const std::string& adapter_dir) {
  const auto adapter = read_adapter_dir(adapter_dir);
  const auto cfg_path = adapter.config_path().string();
  const auto& j = adapter.config;
  const auto& type = adapter.peft_type;
  if (type != "LORA")
    throw std::runtime_error(cfg_path + ": only LoRA adapters can be merged into the base weights; this is a " +
                             (type.empty() ? std::string("adapter without peft_type") : type + " adapter") +
                             (type == "PREFIX_TUNING"
                                  ? " (its prefix is extra attention key/value slots, not a weight change; "
                                    "use it with `ftrun generate` on the adapter directory instead)"
                                  : ""));
  LoraConfig cfg;
  try {
    cfg = parse_lora_config(j);
  } catch (const std::exception& e) {
    throw std::runtime_error(cfg_path + ": " + e.what());
  }
  double scale = cfg.use_rslora ? cfg.lora_alpha / std::sqrt(double(cfg.r)) : cfg.lora_alpha / double(cfg.r);

  auto file = adapter.weights_path().string();
  auto f = st::File::open(file);
  auto all = model.linears();
  std::map<std::string, models::Linear> by_name(all.begin(), all.end());
  std::set<std::string> used;
  // PEFT strips the adapter name on save; files that kept ".default" are accepted too.
  auto find = [&](const std::string& path, const char* which) {
    std::string name = "base_model.model." + path + "." + which + ".weight";
    std::string alt = "base_model.model." + path + "." + which + ".default.weight";
    if (f->contains(name)) return name;
    if (f->contains(alt)) return alt;
    throw std::runtime_error(file + ": missing LoRA tensor " + name +
                             " (does adapter_config.json's target_modules match the file?)");
  };
  std::vector<std::string> merged;
  torch::NoGradGuard ng;
  for (const auto& path : lora_targets(cfg, model)) {
    auto lin = by_name.at(path);
    auto an = find(path, "lora_A"), bn = find(path, "lora_B");
    used.insert(an);
    used.insert(bn);
    auto A = f->get(an).to(at::kFloat), B = f->get(bn).to(at::kFloat);
    if (A.dim() != 2 || B.dim() != 2 || A.size(0) != cfg.r || A.size(1) != lin->in_features ||
        B.size(0) != lin->out_features || B.size(1) != cfg.r) {
      std::ostringstream os;
      os << file << ": " << path << " has lora_A " << A.sizes() << " and lora_B " << B.sizes() << ", expected ["
         << cfg.r << ", " << lin->in_features << "] and [" << lin->out_features << ", " << cfg.r << "] (r=" << cfg.r
         << ")";
      throw std::runtime_error(os.str());
    }
    auto w = lin->weight;
    auto updated = w.to(at::kFloat) + torch::matmul(B, A) * scale;
    w.copy_(updated.to(w.scalar_type()));
    merged.push_back(path);
  }
  for (const auto& info : f->tensors())
    if (!used.count(info.name))
      throw std::runtime_error(file + ": unexpected tensor " + info.name +
                               " (the adapter holds weights its target_modules do not name)");
  return merged;
}

}  // namespace ftrun::peft
