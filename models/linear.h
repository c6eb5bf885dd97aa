// The Linear layer every model family builds its projections from. It is plain y = xW^T + b
// with one extension point: adapters (LoRA) may add terms computed from the same input. A
// term may be in another dtype (fp32 adapters on a bf16 base): the sum is cast back to the
// base result's dtype, as PEFT's LoRA layer does.
// The model itself never installs one; peft/ does, from outside (torchtitan's rule).
#pragma once
#include <torch/nn/module.h>

#include <functional>
#include <vector>

namespace ftrun::models {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  at::Tensor forward(const at::Tensor& x);

  using Delta = std::function<at::Tensor(const at::Tensor& x)>;
  void add_delta(Delta d) { deltas_.push_back(std::move(d)); }
  void clear_deltas() { deltas_.clear(); }
  bool has_deltas() const { return !deltas_.empty(); }

  int64_t in_features, out_features;
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined

 private:
  std::vector<Delta> deltas_;
};
TORCH_MODULE(Linear);

}  // namespace ftrun::models
