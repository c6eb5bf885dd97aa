// AdamW and gradient clipping (see optimizer.h).
#include "sharding/optimizer.h"

#include <torch/torch.h>

#include <cmath>

namespace ftrun::sharding {

AdamW::AdamW(std::vector<at::Tensor> params, std::vector<bool> decay, AdamWOptions opts,
             std::vector<double> lr_scale)
    : params_(std::move(params)), decay_(std::move(decay)), lr_scale_(std::move(lr_scale)), o_(opts) {
  TORCH_CHECK(decay_.size() == params_.size(), "AdamW: one decay flag per parameter");
  if (lr_scale_.empty()) lr_scale_.assign(params_.size(), 1.0);
  TORCH_CHECK(lr_scale_.size() == params_.size(), "AdamW: one learning-rate scale per parameter");
  for (const auto& p : params_) {
    m_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    v_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
  }
}

void AdamW::step(double lr) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params_) grads.push_back(p.grad());
  step(lr, grads);
}

void AdamW::step(double lr, const std::vector<at::Tensor>& grads) {
  TORCH_CHECK(grads.size() == params_.size(), "AdamW: one gradient per parameter");
  torch::NoGradGuard ng;
  ++step_;
  double bc1 = 1.0 - std::pow(o_.beta1, double(step_));
  double bc2 = 1.0 - std::pow(o_.beta2, double(step_));
  double bc2_sqrt = std::sqrt(bc2);
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    const auto& g = grads[i];
    if (!g.defined()) continue;
    // This tensor's group lr (lr * 1.0 == lr exactly, so unscaled tensors step as before).
    const double lr_i = lr * lr_scale_[i];
    const double step_size = lr_i / bc1;
    if (decay_[i] && o_.weight_decay != 0) p.mul_(1.0 - lr_i * o_.weight_decay);
    m_[i].lerp_(g, 1.0 - o_.beta1);
    v_[i].mul_(o_.beta2).addcmul_(g, g, 1.0 - o_.beta2);
    auto denom = (v_[i].sqrt() / bc2_sqrt).add_(o_.eps);
    p.addcdiv_(m_[i], denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

bool decays(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  return !(has("bias") || has("norm"));
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  torch::NoGradGuard ng;
  std::vector<at::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(at::kFloat));
  if (norms.empty()) return 0.0;
  auto total = torch::stack(norms).norm(2);
  double norm = total.item<double>();
  if (max_norm > 0) {
    auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(coef.to(p.grad().scalar_type()));
  }
  return norm;
}

}  // namespace ftrun::sharding
