// The LM head fused with cross-entropy, chunk by chunk (see chunked_loss.h).
#include "models/chunked_loss.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "models/torch_compat.h"

namespace ftrun::models {
namespace {

// One pass over the chunks: the loss sum, and the gradients (for an incoming gradient of 1)
// of the inputs that want one.
struct Pass {
  at::Tensor loss, grad_hidden, grad_weight;
};

Pass run_chunks(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, int64_t chunk,
                int64_t ignore_index, bool want_hidden, bool want_weight) {
  const int64_t N = hidden.size(0);
  const auto dtype = hidden.scalar_type();
  // grad_weight sums one product per chunk: in fp32 unless the weight already is wider.
  const auto acc_dtype = at::promote_types(weight.scalar_type(), at::kFloat);
  const auto fopts = hidden.options().dtype(at::kFloat);
  Pass p;
  auto total = torch::zeros({}, hidden.options().dtype(at::kDouble));
  if (want_hidden) p.grad_hidden = torch::empty_like(hidden, at::MemoryFormat::Contiguous);
  const auto wt = weight.t();
  for (int64_t s = 0; s < N; s += chunk) {
    const int64_t n = std::min(chunk, N - s);
    auto h = hidden.narrow(0, s, n);
    auto t = targets.narrow(0, s, n);
    // The chunk's logits: the matmul in the inputs' dtype, everything after it in fp32.
    auto logits = torch::mm(h, wt);
    if (logits.scalar_type() != at::kFloat) logits = logits.to(at::kFloat);
    auto valid = t != ignore_index;
    auto safe = t.masked_fill(valid.logical_not(), 0).unsqueeze(1);  // [n, 1]
    auto picked = logits.gather(1, safe).squeeze(1);
    // log-sum-exp in place (one [n, V] buffer per chunk): logits becomes exp(logits - max).
    auto max = std::get<0>(logits.max(1, /*keepdim=*/true));
    logits.sub_(max).exp_();
    auto sum = logits.sum(1, /*keepdim=*/true);
    auto lse = (max + sum.log()).squeeze(1);
    auto rows = (lse - picked).masked_fill(valid.logical_not(), 0);
    total.add_(rows.sum().to(at::kDouble));
    if (!want_hidden && !want_weight) continue;
    // d(loss)/d(logits) = softmax - one_hot(target); ignored rows contribute nothing.
    logits.div_(sum);
    logits.scatter_add_(1, safe, torch::full({n, 1}, -1.0, fopts));
    logits.masked_fill_(valid.logical_not().unsqueeze(1), 0);
    auto g = logits.scalar_type() == dtype ? logits : logits.to(dtype);
    logits = at::Tensor();  // a bf16 copy replaces it; drop the fp32 one
    if (want_hidden) {
      auto out = p.grad_hidden.narrow(0, s, n);
      torch::mm_out(out, g, weight);
    }
    if (want_weight) {
      if (!p.grad_weight.defined()) {
        p.grad_weight = torch::mm(g.t(), h);
        if (p.grad_weight.scalar_type() != acc_dtype) p.grad_weight = p.grad_weight.to(acc_dtype);
      } else if (acc_dtype == dtype) {
        p.grad_weight.addmm_(g.t(), h);
      } else {
        p.grad_weight.add_(torch::mm(g.t(), h));
      }
    }
  }
  if (want_weight) {
    if (!p.grad_weight.defined()) p.grad_weight = torch::zeros_like(weight, at::MemoryFormat::Contiguous);
    else if (p.grad_weight.scalar_type() != weight.scalar_type()) p.grad_weight = p.grad_weight.to(weight.scalar_type());
  }
  p.loss = total.to(at::kFloat);
  return p;
}

// The autograd node: forward does the whole pass (loss and gradients), backward scales the
// gradients by the incoming one. They are handed over once (moved out), so autograd can
// take them without a copy; a second backward through the same graph is refused.
struct FusedHeadLoss : public torch::autograd::Function<FusedHeadLoss> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t chunk, int64_t ignore_index) {
    auto p = run_chunks(hidden, weight, targets, chunk, ignore_index, hidden.requires_grad(), weight.requires_grad());
    ctx->saved_data["grad_hidden"] = p.grad_hidden;
    ctx->saved_data["grad_weight"] = p.grad_weight;
    ctx->saved_data["pending"] = true;
    return p.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    TORCH_CHECK(ctx->saved_data["pending"].toBool(),
                "chunked_linear_cross_entropy: backward ran twice through the same loss (its gradients are made "
                "once, in forward)");
    ctx->saved_data["pending"] = false;
    auto take = [ctx](const char* key) {
      auto v = ctx->saved_data[key];
      ctx->saved_data[key] = at::Tensor();
      return v.isTensor() ? v.toTensor() : at::Tensor();
    };
    auto gh = take("grad_hidden"), gw = take("grad_weight");
    const auto& g = grad_out[0];
    // The gradients were made for an incoming gradient of 1 (the usual case: a loss sum
    // divided by the token count arrives as 1 / count).
    if (g.defined()) {
      if (gh.defined()) gh.mul_(g.to(gh.scalar_type()));
      if (gw.defined()) gw.mul_(g.to(gw.scalar_type()));
    } else {
      gh = gw = at::Tensor();
    }
    return {gh, gw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

int64_t default_loss_chunk_tokens(int64_t vocab_size) {
  // Smaller chunks save little more memory but cost time when the head is trained: every
  // chunk adds its product into the whole [V, H] grad_weight (one more pass over it).
  const int64_t budget = int64_t(256) << 20;  // bytes of fp32 logits per chunk
  return std::clamp<int64_t>(budget / (4 * std::max<int64_t>(vocab_size, 1)), 16, 4096);
}

at::Tensor chunked_linear_cross_entropy(const at::Tensor& hidden_in, const at::Tensor& weight_in,
                                       const at::Tensor& targets_in, int64_t chunk_tokens, int64_t ignore_index) {
  TORCH_CHECK(hidden_in.dim() == 2 && weight_in.dim() == 2 && hidden_in.size(1) == weight_in.size(1),
              "chunked_linear_cross_entropy: hidden [N, H] and weight [V, H] expected, got ", hidden_in.sizes(),
              " and ", weight_in.sizes());
  TORCH_CHECK(targets_in.dim() == 1 && targets_in.size(0) == hidden_in.size(0),
              "chunked_linear_cross_entropy: targets [N] expected for hidden ", hidden_in.sizes(), ", got ",
              targets_in.sizes());
  TORCH_CHECK(hidden_in.scalar_type() == weight_in.scalar_type(),
              "chunked_linear_cross_entropy: hidden and weight must have one dtype, got ", hidden_in.scalar_type(),
              " and ", weight_in.scalar_type());
  const int64_t V = weight_in.size(0);
  auto targets = targets_in.to(hidden_in.device(), at::kLong);
  if (targets.numel() > 0) {
    auto bad = targets.ne(ignore_index).logical_and(targets.lt(0).logical_or(targets.ge(V)));
    if (bad.any().item<bool>()) {
      auto first = targets.masked_select(bad)[0].item<int64_t>();
      TORCH_CHECK(false, "chunked_linear_cross_entropy: target ", first, " is out of bounds (vocabulary of ", V, ")");
    }
  }
  const int64_t chunk = chunk_tokens > 0 ? chunk_tokens : default_loss_chunk_tokens(V);
  auto hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  // Under autocast (HF's bf16: true) the head is a linear, which autocast runs in its lower
  // precision: cast both inputs here, outside the node, so that autograd casts the gradients
  // back; the node itself then runs with autocast off and sees one dtype.
  const bool cuda = hidden.is_cuda();
  const auto device = cuda ? at::kCUDA : at::kCPU;
  if (compat::autocast_enabled(device) && hidden.scalar_type() == at::kFloat) {
    const auto low = compat::autocast_dtype(device);
    hidden = hidden.to(low);
    weight = weight.to(low);
  }
  c10::impl::ExcludeDispatchKeyGuard no_autocast(cuda ? c10::DispatchKey::Autocast : c10::DispatchKey::AutocastCPU);
  const bool grad = torch::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad());
  if (!grad) return run_chunks(hidden, weight, targets, chunk, ignore_index, false, false).loss;
  return FusedHeadLoss::apply(hidden, weight, targets, chunk, ignore_index);
}

}  // namespace ftrun::models
