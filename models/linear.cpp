// Linear layer with additive adapter terms, and parameter allocation with or without init
// (see linear.h).
#include "models/linear.h"

#include <torch/torch.h>

namespace ftrun::models {

namespace {
thread_local EmptyInitScope* current_scope = nullptr;
}

EmptyInitScope::EmptyInitScope(at::ScalarType dtype, c10::Device device)
    : dtype_(dtype), device_(device), outer_(current_scope) {
  current_scope = this;
}

EmptyInitScope::~EmptyInitScope() { current_scope = outer_; }

void EmptyInitScope::skip_normal(int64_t numel) {
  // Embedding tables are never under 16 elements in a model ftrun builds; the serial path
  // libtorch takes below 16 (Box-Muller in double, with a cached sample) is not counted here.
  TORCH_CHECK(numel >= 16, "EmptyInitScope: cannot account for the init of a ", numel, "-element table");
  skipped_draws_ += normal_fill_draws(numel);
}

EmptyInitScope* empty_init_scope() { return current_scope; }

uint64_t normal_fill_draws(int64_t numel) {
  return uint64_t(numel) + (numel % 16 != 0 ? 16u : 0u);
}

at::Tensor param_empty(at::IntArrayRef sizes) {
  if (auto* s = current_scope) return torch::empty(sizes, torch::TensorOptions().dtype(s->dtype()).device(s->device()));
  return torch::empty(sizes);
}

at::Tensor param_zeros(at::IntArrayRef sizes) {
  if (current_scope) return param_empty(sizes);
  return torch::zeros(sizes);
}

at::Tensor param_ones(at::IntArrayRef sizes) {
  if (current_scope) return param_empty(sizes);
  return torch::ones(sizes);
}

torch::nn::Embedding make_embedding(int64_t num, int64_t dim) {
  auto* s = current_scope;
  if (!s) return torch::nn::Embedding(num, dim);
  s->skip_normal(num * dim);
  torch::nn::Embedding e(torch::nn::EmbeddingOptions(num, dim)._weight(param_empty({num, dim})));
  e->weight.set_requires_grad(true);  // a given _weight is registered frozen; the default is trainable
  return e;
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", param_empty({out, in}));
  if (has_bias) bias = register_parameter("bias", param_zeros({out}));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  auto y = torch::nn::functional::linear(x, weight, bias);
  if (deltas_.empty()) return y;
  // PEFT >= 0.12: adapter terms may come back in their own (fp32) dtype; the sum is taken in
  // the promoted dtype and cast back to the base layer's result dtype once.
  const auto dtype = y.scalar_type();
  auto out = y;
  for (const auto& d : deltas_) out = out + d(x, y);
  return out.to(dtype);
}

}  // namespace ftrun::models
