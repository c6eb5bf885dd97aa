// Full fine-tuning as a strategy (no peft_config): every weight trains, and the result is
// the whole model in HF's on-disk form (config.json + safetensors, sharded with an index
// past 5 GB), so transformers and ftrun load it as a base model.
#include <torch/torch.h>

#include "peft/strategy.h"

namespace ftrun::peft {
namespace {

class Full : public Strategy {
 public:
  std::string name() const override { return "FULL"; }
  bool trains_all_weights() const override { return true; }
  void apply(models::CausalLM& model) override {
    model_ = &model;
    for (auto& p : model.parameters()) p.set_requires_grad(true);
  }
  NamedTensors trainable() const override {
    NamedTensors out;
    auto params = model_->named_parameters();
    for (const auto& name : model_->base_parameter_names()) out.emplace_back(name, params[name]);
    return out;
  }
  void save(const std::string& dir, const std::string&) const override {
    for (const auto& kv : trainable())
      if (kv.second.numel() == 0) throw std::runtime_error(dir + ": refusing to save an empty tensor " + kv.first);
    models::save_pretrained(*model_, dir);
  }
  void load(const std::string& dir) override { models::load_weights(*model_, dir); }

 private:
  models::CausalLM* model_ = nullptr;
};

}  // namespace

std::unique_ptr<Strategy> make_full(const nlohmann::json&) { return std::make_unique<Full>(); }

}  // namespace ftrun::peft
