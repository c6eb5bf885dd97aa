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

#include "models/config.h"
#include "models/safetensors.h"
#include "peft/adapter.h"
#include "peft/lora.h"

namespace fs = std::filesystem;

namespace ftrun::peft {
namespace {

std::string describe_model(const models::ModelConfig& c) {
  std::string archs;
  for (const auto& a : c.architectures) archs += (archs.empty() ? "" : ", ") + a;
  return "model_type " + (c.model_type.empty() ? std::string("(none)") : c.model_type) +
         (archs.empty() ? "" : " (" + archs + ")");
}

// Issue 16: a Llama adapter merged into a Qwen2 base used to succeed and write a broken
// model. When the adapter's base_model_name_or_path is a readable model directory and the base
// used is another one, both must be the same kind of model. (A hub name or a moved directory
// cannot be read: the shape checks below still catch most mismatches.)
void check_base_kind(const AdapterDir& adapter, const models::CausalLM& model) {
  const auto& base = model.config();
  if (adapter.base_model_path.empty()) return;
  std::error_code ec;
  const fs::path recorded = fs::path(adapter.base_model_path) / "config.json";
  if (!fs::is_regular_file(recorded, ec)) return;
  if (!base.path.empty() && fs::equivalent(recorded, base.path, ec)) return;
  models::ModelConfig trained_on;
  try {
    trained_on = models::load_model_config(adapter.base_model_path);
  } catch (const std::exception&) {
    return;  // not readable as a model: nothing to compare against
  }
  if (trained_on.model_type == base.model_type && trained_on.architectures == base.architectures) return;
  throw std::runtime_error(adapter.config_path().string() + ": the adapter was trained on " + adapter.base_model_path +
                           ", " + describe_model(trained_on) + ", but the base model " +
                           fs::path(base.path).parent_path().string() + " is " + describe_model(base) +
                           "; merge it into a base of its own kind");
}

}  // namespace

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
  check_base_kind(adapter, model);

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
         << ") by the base model " << fs::path(model.config().path).parent_path().string()
         << ": was the adapter trained on another model?";
      throw std::runtime_error(os.str());
    }
    auto w = lin->weight;
    auto delta = torch::matmul(B, A) * scale;
    auto updated = w.to(at::kFloat) + delta;
    if (cfg.use_dora) {
      // DoRA, as PEFT 0.14's LoraLayer.merge: W' = (m / ||W + sBA||) * (W + sBA), row-wise
      // (the norm taken with scaling 1 on the already scaled delta, in fp32).
      std::string mn = "base_model.model." + path + ".lora_magnitude_vector";
      if (!f->contains(mn) && f->contains(mn + ".default.weight")) mn += ".default.weight";
      if (!f->contains(mn))
        throw std::runtime_error(file + ": missing DoRA tensor " + mn + " (adapter_config.json says use_dora: true)");
      used.insert(mn);
      auto m = f->get(mn).to(at::kFloat);
      if (m.dim() != 1 || m.size(0) != lin->out_features) {
        std::ostringstream os;
        os << file << ": " << mn << " has shape " << m.sizes() << ", expected [" << lin->out_features << "]";
        throw std::runtime_error(os.str());
      }
      auto norm = dora_weight_norm(w.to(at::kFloat), delta, 1.0);
      updated = (m / norm).view({-1, 1}) * updated;
    }
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
