// The precision plan and the autocast region (see precision.h).
#include "runtime/precision.h"

#include <ATen/autocast_mode.h>

#include <stdexcept>

#include "models/model.h"
#include "models/torch_compat.h"
#include "peft/strategy.h"

namespace ftrun::runtime {

std::string Precision::describe() const {
  return "weights " + models::hf_dtype_name(weights) + (autocast_bf16 ? ", bf16 autocast" : "");
}

namespace {

at::ScalarType parse_dtype(const std::string& name, const std::string& where) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float32" || name.empty()) return at::kFloat;
  throw std::runtime_error(where + ": unknown torch_dtype '" + name + "' (expected bfloat16, float16 or float32)");
}

}  // namespace

at::ScalarType resolve_weights_dtype(const std::string& torch_dtype, const models::ModelConfig& mc,
                                     const std::string& where, std::vector<std::string>* notes) {
  if (torch_dtype.empty() || torch_dtype == "auto") {
    auto dt = parse_dtype(mc.torch_dtype, mc.path);
    if (dt != at::kHalf) return dt;
    if (notes)
      notes->push_back("torch_dtype auto: " + mc.path + " says float16; holding the weights in bfloat16 "
                       "(ftrun has no fp16 loss scaling; bf16 has fp32's range at a coarser mantissa); set "
                       "torch_dtype: float32 to train in full precision");
    return at::kBFloat16;
  }
  auto dt = parse_dtype(torch_dtype, where);
  if (dt == at::kHalf)
    throw std::runtime_error(where + ": float16 is not supported (ftrun has no fp16 loss "
                                     "scaling); use bfloat16, which has fp32's range, or float32");
  return dt;
}

Precision resolve_precision(const Config& cfg, const models::ModelConfig& mc, const peft::Strategy& strategy) {
  Precision p;
  p.autocast_bf16 = cfg.training_args.bf16;
  p.weights = resolve_weights_dtype(cfg.torch_dtype, mc, cfg.path + ": torch_dtype", &p.notes);
  if (strategy.trains_all_weights() && p.weights == at::kBFloat16)
    p.notes.push_back("full fine-tuning in bfloat16 as DeepSpeed's bf16 mode: bf16 working weights, fp32 master "
                      "weights and AdamW state sharded by ZeRO, bf16 gradient communication; set "
                      "torch_dtype: float32 to train fp32 weights");
  return p;
}

AutocastGuard::AutocastGuard(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  const auto prev = compat::AutocastState::current();
  prev_cpu_ = prev.cpu;
  prev_cuda_ = prev.cuda;
  prev_cpu_dtype_ = prev.cpu_dtype;
  prev_cuda_dtype_ = prev.cuda_dtype;
  compat::AutocastState::bf16().apply();  // CPU and CUDA: whichever device the run is on
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::AutocastState{prev_cpu_, prev_cuda_, prev_cpu_dtype_, prev_cuda_dtype_}.apply();
}

}  // namespace ftrun::runtime
