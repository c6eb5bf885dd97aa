// Linear layer with additive adapter terms (see linear.h).
#include "models/linear.h"

#include <torch/torch.h>

namespace ftrun::models {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out}));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  auto y = torch::nn::functional::linear(x, weight, bias);
  if (deltas_.empty()) return y;
  // PEFT >= 0.12: adapter terms may come back in their own (fp32) dtype; the sum is taken in
  // the promoted dtype and cast back to the base layer's result dtype once.
  const auto dtype = y.scalar_type();
  for (const auto& d : deltas_) y = y + d(x);
  return y.to(dtype);
}

}  // namespace ftrun::models
