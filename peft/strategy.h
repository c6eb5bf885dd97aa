// peft/: owns what trains and how it is saved: the Strategy interface below, its plug-ins
// (lora, ptuning, full), the PEFT adapter directory (adapter.h) and merge.
//
// The Strategy interface: what trains, which modules are added, how the result is saved and
// loaded. Plug-ins (lora; later ptuning_v2, full) register a factory under their PEFT
// `peft_type`; the trainer knows only this interface.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"

namespace ftrun::peft {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;
  // Freezes what must not train and adds the strategy's modules to the model.
  virtual void apply(models::CausalLM& model) = 0;
  // The trainable tensors (requires_grad), named as they are saved
  // (e.g. "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").
  virtual NamedTensors trainable() const = 0;
  // Writes the result in its on-disk format (PEFT adapter, or HF model for full).
  virtual void save(const std::string& dir, const std::string& base_model_path) const = 0;
  // Loads a saved result into the applied modules (continue training, or inference).
  virtual void load(const std::string& dir) = 0;
  // The peft_config keys that shape what is trained (tensor shapes, targets, scaling): a run
  // may resume from a checkpoint only when each of them equals the checkpoint's.
  virtual std::vector<std::string> resume_keys() const { return {}; }
  // True when the trainable tensors are the model's own weights (full fine-tuning): the result
  // is a whole HF model, which under ZeRO-3 is written unit by unit, never gathered whole.
  virtual bool trains_all_weights() const { return false; }
};

using Factory = std::function<std::unique_ptr<Strategy>(const nlohmann::json& peft_config)>;
void register_strategy(const std::string& peft_type, Factory factory);
// peft_config["peft_type"] picks the plug-in (LORA, PREFIX_TUNING; null = FULL); an
// unknown type lists the registered ones.
std::unique_ptr<Strategy> make_strategy(const nlohmann::json& peft_config);
// Writes a PEFT adapter: dir/adapter_model.safetensors (metadata {"format": "pt"}) and
// dir/adapter_config.json, each to a temp file renamed into place. An empty tensor is an
// error (never write an adapter that loads as a no-op).
void write_adapter(const std::string& dir, const NamedTensors& tensors, const nlohmann::json& config);

// Reads dir/adapter_config.json and builds the matching strategy (for generate / resume).
std::unique_ptr<Strategy> strategy_from_adapter_dir(const std::string& dir);

}  // namespace ftrun::peft
