// The Llama family (Llama-2/3, Qwen2, Mistral): transformers' modeling_llama math, module
// names as in HF checkpoints. Internal to models/; the rest of ftrun sees CausalLM.
#pragma once
#include "models/model.h"

namespace ftrun::models {

std::shared_ptr<CausalLM> make_llama(const ModelConfig& config);

// Rotary inverse frequencies [head_dim/2] after the config's rope_scaling (exposed for tests).
at::Tensor rope_inv_freq(const ModelConfig& config);

}  // namespace ftrun::models
