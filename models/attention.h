// The attention kernels the model families share (issue 14): HF's eager attention is written
// out in each family (models/llama.cpp, models/chatglm.cpp: fp32 softmax, bit-exact with
// transformers' eager path); on libtorch 2.x the families can instead call
// scaled_dot_product_attention, which dispatches to the flash / memory-efficient / cuDNN
// kernels on a GPU where the mask allows (flash needs no mask: the plain causal case).
//
// Which one runs is the run's `attn_implementation` (runtime/config.h): auto = sdpa where it
// is compiled in, else eager; set on the model with CausalLM::set_attention_kernel.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace ftrun::models {

enum class AttentionKernel { kEager, kSdpa };

// Whether this build has scaled_dot_product_attention (libtorch >= 2.0).
bool sdpa_available();

// The run's attn_implementation ("auto", "eager" or "sdpa"): auto is sdpa where it is
// compiled in. Throws, naming the key, for sdpa on a build without it and for anything else
// (flash_attention_2 included: sdpa takes the flash kernel where the mask allows).
AttentionKernel resolve_attention_kernel(const std::string& attn_implementation);

// "eager" / "sdpa".
std::string attention_kernel_name(AttentionKernel k);

// softmax(q.k^T / sqrt(D) + mask) . v through scaled_dot_product_attention, for q [B, h, T, D],
// k and v [B, h, S, D] (kv heads already repeated) and an additive mask [B, 1, T, S] in q's
// dtype. An undefined mask means the plain causal triangle (T == S, every key real): then no
// mask tensor is passed and is_causal is set, the case the flash kernel takes. Throws on a
// build without SDPA.
at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

}  // namespace ftrun::models
