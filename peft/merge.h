// Folding a trained LoRA adapter into its base model's weights (`ftrun merge`), so the
// result is a plain HF model that loads and runs without any PEFT machinery.
#pragma once
#include <string>
#include <vector>

#include "models/model.h"

namespace ftrun::peft {

// Reads adapter_dir (adapter_config.json + adapter_model.safetensors) and, for every adapted
// Linear, sets W <- W + scale * B @ A (computed in fp32, stored back in W's dtype), with
// scale = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). The model's structure is
// not changed: no adapter modules are added. A non-LoRA adapter (prefix tuning) is refused,
// as are missing, unexpected or misshapen tensors. Returns the merged module paths.
std::vector<std::string> merge_lora(models::CausalLM& model, const std::string& adapter_dir);

}  // namespace ftrun::peft
