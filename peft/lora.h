// LoRA (Hu et al.), as PEFT implements it: y = W x + s * B(A(dropout(x))), s = alpha / r
// (alpha / sqrt(r) with use_rslora); A kaiming-uniform(a=sqrt(5)) [r, in], B zero [out, r],
// adapters kept in fp32. Saved in PEFT's format: adapter_config.json +
// adapter_model.safetensors with names base_model.model.<module path>.lora_{A,B}.weight.
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
  nlohmann::json raw;  // as given, written back into adapter_config.json
};

// Validates a PEFT LoraConfig dictionary: unknown keys are an error naming the closest
// known one; PEFT options ftrun does not implement (DoRA, modules_to_save, bias, ...) are an
// error when set to anything but their default.
LoraConfig parse_lora_config(const nlohmann::json& j);

// The module paths of `model` that `cfg` targets (error when none match).
std::vector<std::string> lora_targets(const LoraConfig& cfg, models::CausalLM& model);

}  // namespace ftrun::peft
