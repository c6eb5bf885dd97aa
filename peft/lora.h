// LoRA (Hu et al.), as PEFT implements it: y = W x + s * B(A(dropout(x))), s = alpha / r
// (alpha / sqrt(r) with use_rslora); A kaiming-uniform(a=sqrt(5)) [r, in], B zero [out, r],
// adapters kept in fp32. Saved in PEFT's format: adapter_config.json +
// adapter_model.safetensors with names base_model.model.<module path>.lora_{A,B}.weight.
//
// use_dora: DoRA (Liu et al.) as PEFT 0.14 (tuners/lora/dora.py) does it: a trainable
// magnitude m [out] per target, base_model.model.<module path>.lora_magnitude_vector on disk,
// initialised to the row norms ||W + s BA|| (computed in the base weight's dtype, as PEFT
// computes them before it upcasts the adapter to fp32). Forward adds
//   (m / n - 1) * (W x') + (m / n) * s * B(A(x')),  n = ||W + s BA|| row-wise, detached,
// where x' = dropout(x) while training with lora_dropout > 0 (then W x' is recomputed in
// fp32), else x' = x and W x is the base result minus the bias.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "peft/strategy.h"

namespace ftrun::peft {

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8;
  double lora_dropout = 0.0;
  std::vector<std::string> target_modules;  // names matched as PEFT does (suffix match)
  std::string target_regex;                 // when target_modules was a string: full match
  bool use_rslora = false;
  bool use_dora = false;  // PEFT's weight-decomposed LoRA (see above)
  nlohmann::json raw;  // as given, written back into adapter_config.json
};

// Validates a PEFT LoraConfig dictionary: unknown keys are an error naming the closest
// known one; PEFT options ftrun does not implement (modules_to_save, bias, ...) are an
// error when set to anything but their default.
LoraConfig parse_lora_config(const nlohmann::json& j);

// PEFT's DoraLinearLayer.get_weight_norm: the L2 norm of each row (output feature) of
// weight + scaling * lora_weight, [out], computed in the dtype the two promote to.
at::Tensor dora_weight_norm(const at::Tensor& weight, const at::Tensor& lora_weight, double scaling);

// The module paths of `model` that `cfg` targets (error when none match).
std::vector<std::string> lora_targets(const LoraConfig& cfg, models::CausalLM& model);

}  // namespace ftrun::peft
