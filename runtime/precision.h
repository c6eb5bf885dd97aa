// runtime/precision.h: the precision plan of a run (issue 13), decided once from the config,
// the checkpoint's config.json and the strategy:
//   - the dtype the base model is held and computed in (`torch_dtype`, HF's from_pretrained
//     argument; `auto` = config.json's torch_dtype, as transformers v5 and the GLM-4 demo's
//     explicit bfloat16 give);
//   - whether forwards run under bf16 autocast (`training_args.bf16`, HF Trainer's meaning).
// Trainable tensors always have fp32 masters: LoRA adapters and prefix encoders are made fp32
// after the base is cast (they are their own masters); a full fine-tune of a bf16-held model
// trains bf16 working weights beside fp32 masters held by the ZeRO engine (DeepSpeed's bf16
// mode, sharding/zero.h). AdamW moments are always fp32.
#pragma once
#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

#include "models/config.h"
#include "runtime/config.h"

namespace ftrun::peft {
class Strategy;
}

namespace ftrun::runtime {

struct Precision {
  at::ScalarType weights = at::kFloat;  // the base model's dtype in memory and compute
  bool autocast_bf16 = false;           // forwards under CPU bf16 autocast
  std::vector<std::string> notes;       // decisions worth telling the user (rank 0 prints)
  std::string describe() const;         // "weights bfloat16, autocast bf16"
};

// The dtype a base model is held in for `torch_dtype` ("auto", "bfloat16", "float16",
// "float32"; "" = auto) against config.json's, by the rules below; notes receive what to tell
// the user. `where` names the setting in errors.
at::ScalarType resolve_weights_dtype(const std::string& torch_dtype, const models::ModelConfig& model_config,
                                     const std::string& where, std::vector<std::string>* notes);

// `torch_dtype` ("auto", "bfloat16", "float16", "float32"; "" = auto) against config.json's.
// float16 is refused (no fp16 loss scaling; CPU has no fast fp16 matmul); an `auto` that
// resolves to float16 holds bfloat16 instead, with a note. A full fine-tune in bfloat16 gets
// a note saying it runs as DeepSpeed's bf16 mode.
Precision resolve_precision(const Config& cfg, const models::ModelConfig& model_config,
                            const peft::Strategy& strategy);

// A bf16 autocast region on the CPU and on CUDA, as `with torch.autocast(device, torch.bfloat16)`
// opens one on the run's device:
// enabled for the guard's life, nesting counted, the cast cache cleared when the outermost
// region closes (so casts of weights are not reused after an optimizer step). A disabled
// guard changes nothing.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  // compat::AutocastState before the guard (CPU and CUDA), kept without its header here.
  bool prev_cpu_ = false, prev_cuda_ = false;
  at::ScalarType prev_cpu_dtype_ = at::kBFloat16, prev_cuda_dtype_ = at::kBFloat16;
};

}  // namespace ftrun::runtime
