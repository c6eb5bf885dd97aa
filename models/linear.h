// The Linear layer every model family builds its projections from. It is plain y = xW^T + b
// with one extension point: adapters (LoRA) may add terms computed from the same input (and,
// for DoRA, from the base result y itself). A term may be in another dtype (fp32 adapters on
// a bf16 base): the sum is cast back to the base result's dtype, as PEFT's LoRA layer does.
// The model itself never installs one; peft/ does, from outside (torchtitan's rule).
//
// It also says how every model class allocates its parameters (param_empty/zeros/ones,
// make_embedding): as build_model always has (fp32, libtorch's own Embedding init), or, inside
// an EmptyInitScope (load_pretrained), uninitialised in the scope's dtype, HF's
// low_cpu_mem_usage: nothing is filled, and no fp32 copy of a 16-bit model ever exists.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace ftrun::models {

// While one lives (on this thread), new parameters are torch::empty in `dtype`, without any
// init, and the random draws build_model's path would have made are counted (skipped_draws()),
// so that load_pretrained can advance the generator by them (loading leaves the RNG where it
// always has: a seeded run's adapter init does not move). Loading must overwrite every
// parameter (load_weights refuses a checkpoint that misses one).
class EmptyInitScope {
 public:
  // device: where the parameters are allocated (a GPU: load_pretrained then reads each tensor
  // straight into device memory, and no host copy of the model exists).
  explicit EmptyInitScope(at::ScalarType dtype, c10::Device device = c10::Device(c10::kCPU));
  ~EmptyInitScope();
  EmptyInitScope(const EmptyInitScope&) = delete;
  EmptyInitScope& operator=(const EmptyInitScope&) = delete;
  at::ScalarType dtype() const { return dtype_; }
  c10::Device device() const { return device_; }
  // Draws of the default CPU generator that libtorch's Embedding init would have made.
  uint64_t skipped_draws() const { return skipped_draws_; }
  void skip_normal(int64_t numel);  // counts what normal_ on a contiguous fp32 tensor draws

 private:
  at::ScalarType dtype_;
  c10::Device device_;
  uint64_t skipped_draws_ = 0;
  EmptyInitScope* outer_;
};
// The innermost live scope on this thread, or null (build_model's path).
EmptyInitScope* empty_init_scope();

// Draws of the CPU generator that normal_ makes on a contiguous fp32 tensor of numel >= 16
// (ATen's normal_fill: one uniform per element, and 16 more when numel % 16 != 0).
uint64_t normal_fill_draws(int64_t numel);

// Parameter storage for the model classes: torch::empty / zeros / ones in fp32 as always, or
// torch::empty in the scope's dtype inside an EmptyInitScope.
at::Tensor param_empty(at::IntArrayRef sizes);
at::Tensor param_zeros(at::IntArrayRef sizes);
at::Tensor param_ones(at::IntArrayRef sizes);
// torch::nn::Embedding(num, dim) (its own normal(0, 1) init), or inside an EmptyInitScope an
// uninitialised one in the scope's dtype (requires_grad as the default one has).
torch::nn::Embedding make_embedding(int64_t num, int64_t dim);

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  at::Tensor forward(const at::Tensor& x);

  using Delta = std::function<at::Tensor(const at::Tensor& x)>;
  // A term that also reads the base result y = xW^T + b (in the base dtype, before any term
  // is added): PEFT's DoRA rescales it, (m / ||W + sBA|| - 1) * (y - b), instead of
  // recomputing xW^T.
  using BaseDelta = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& base)>;
  void add_delta(Delta d) {
    deltas_.push_back([d = std::move(d)](const at::Tensor& x, const at::Tensor&) { return d(x); });
  }
  void add_base_delta(BaseDelta d) { deltas_.push_back(std::move(d)); }
  void clear_deltas() { deltas_.clear(); }
  bool has_deltas() const { return !deltas_.empty(); }

  int64_t in_features, out_features;
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined

 private:
  std::vector<BaseDelta> deltas_;
};
TORCH_MODULE(Linear);

}  // namespace ftrun::models
