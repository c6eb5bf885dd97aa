// AdamW with decoupled weight decay, the math of torch.optim.AdamW (amsgrad off), and
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_. Single-process form;
// the ZeRO engine runs it on flat shards.
//
// Per-tensor learning-rate multipliers (LoRA+, PEFT's create_loraplus_optimizer): tensor i
// steps with lr * lr_scale[i], as if it were in a torch param group of its own whose lr the
// scheduler scales the same way. The decoupled decay uses that same lr (torch multiplies a
// group's weight decay by the group's lr).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace ftrun::sharding {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  // decay[i] says whether params[i] gets weight decay (HF exempts biases and norm weights).
  // lr_scale[i] multiplies params[i]'s learning rate (empty: 1 for all).
  AdamW(std::vector<at::Tensor> params, std::vector<bool> decay, AdamWOptions opts,
        std::vector<double> lr_scale = {});
  void step(double lr);  // uses each param's .grad(); undefined grads are skipped
  // The same with gradients given explicitly (flat shards have no .grad()).
  void step(double lr, const std::vector<at::Tensor>& grads);
  void zero_grad();
  int64_t steps() const { return step_; }
  const std::vector<at::Tensor>& exp_avg() const { return m_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return v_; }
  // For resuming: the moments are filled in place, the step count set.
  std::vector<at::Tensor>& mutable_exp_avg() { return m_; }
  std::vector<at::Tensor>& mutable_exp_avg_sq() { return v_; }
  void set_steps(int64_t steps) { step_ = steps; }

 private:
  std::vector<at::Tensor> params_, m_, v_;
  std::vector<bool> decay_;
  std::vector<double> lr_scale_;
  AdamWOptions o_;
  int64_t step_ = 0;
};

// HF's rule for which parameters get weight decay: not biases, not normalisation weights.
bool decays(const std::string& param_name);

// Scales grads so their global L2 norm is at most max_norm (coefficient max/(norm+1e-6),
// capped at 1); returns the norm before clipping. max_norm <= 0 only measures.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace ftrun::sharding
