// The LM head fused with its cross-entropy, a chunk of tokens at a time (Liger-Kernel's
// fused_linear_cross_entropy design): the loss of hidden [N, H] through a head weight [V, H]
// against targets [N] without ever holding more than one chunk's logits. With GLM-4's padded
// vocabulary (151,552) 1,024 tokens of fp32 logits are 620 MB, and autograd would keep them
// and their gradient as well; here a chunk's logits live only while the chunk is computed.
//
// When a gradient is wanted, each chunk's gradients (softmax - one-hot, then through the
// matmul into grad_hidden and grad_weight) are computed in the same pass, right after its
// loss, so the chunk's logits are made once; backward only scales them by the incoming
// gradient. Without grad mode (evaluation) only the loss is computed.
//
// Precision: the matmul runs in the inputs' dtype (so a bf16 hidden/weight uses bf16 GEMMs,
// as HF's bf16 lm_head does), the log-sum-exp and softmax in fp32 (HF's `logits.float()`),
// grad_weight is accumulated over chunks in fp32 when the weight is lower precision, and the
// gradients are returned in the inputs' dtypes. The loss is an fp32 scalar. Under autocast
// (bf16: true on fp32 weights) fp32 inputs are cast to autocast's dtype first, as autocast
// does for a linear; the gradients flow back through that cast.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ftrun::models {

// Tokens per chunk when the caller does not choose: as many as keep one chunk's fp32 logits
// near 256 MiB (at least 16, at most 4,096): 442 tokens for GLM-4's 151,552, 2,097 for 32,000.
int64_t default_loss_chunk_tokens(int64_t vocab_size);

// Sum over rows i with targets[i] != ignore_index of cross_entropy(hidden[i] @ weight^T,
// targets[i]); an fp32 scalar (0 with a zero gradient when no row counts). hidden [N, H],
// weight [V, H] (same dtype), targets [N] int64 in [0, V) or ignore_index.
// chunk_tokens <= 0 means default_loss_chunk_tokens(V). Differentiable in hidden and weight.
at::Tensor chunked_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                       const at::Tensor& targets, int64_t chunk_tokens = 0,
                                       int64_t ignore_index = -100);

}  // namespace ftrun::models
