// scaled_dot_product_attention behind a version guard (see attention.h): libtorch 1.13 has
// only a private, differently named variant, so the 1.13 build keeps the eager path alone.
#include "models/attention.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <stdexcept>

namespace ftrun::models {

bool sdpa_available() {
#if TORCH_VERSION_MAJOR >= 2
  return true;
#else
  return false;
#endif
}

AttentionKernel resolve_attention_kernel(const std::string& name) {
  if (name == "eager") return AttentionKernel::kEager;
  if (name == "auto") return sdpa_available() ? AttentionKernel::kSdpa : AttentionKernel::kEager;
  if (name == "sdpa") {
    if (sdpa_available()) return AttentionKernel::kSdpa;
    throw std::runtime_error("attn_implementation: sdpa needs a build against libtorch >= 2.0 (this one has " TORCH_VERSION
                             "; the CUDA flavour, .ci/build-cuda, has 2.11); use auto or eager");
  }
  if (name == "flash_attention_2")
    throw std::runtime_error("attn_implementation: flash_attention_2 is not a separate kernel in ftrun: sdpa uses "
                             "FlashAttention where the mask allows; use auto or sdpa");
  throw std::runtime_error("attn_implementation: expected auto, eager or sdpa, got '" + name + "'");
}

std::string attention_kernel_name(AttentionKernel k) { return k == AttentionKernel::kSdpa ? "sdpa" : "eager"; }

at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
#if TORCH_VERSION_MAJOR >= 2
  // Default scale 1 / sqrt(D), as the eager paths; no dropout (attention_dropout is 0 in every
  // supported config).
  if (!mask.defined()) return at::scaled_dot_product_attention(q, k, v, c10::nullopt, 0.0, /*is_causal=*/true);
  return at::scaled_dot_product_attention(q, k, v, mask.to(q.scalar_type()), 0.0, /*is_causal=*/false);
#else
  (void)q, (void)k, (void)v, (void)mask;
  throw std::runtime_error("scaled_dot_product_attention needs libtorch >= 2.0 (this build has " TORCH_VERSION ")");
#endif
}

}  // namespace ftrun::models
