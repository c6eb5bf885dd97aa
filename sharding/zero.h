// sharding/: owns how trainable and frozen tensors are partitioned across ranks (this ZeRO
// engine, with activation checkpointing) and the sharded AdamW (optimizer.h). Collectives
// come from comm/.
//
// The ZeRO engine (stages 0-3) over a model's units. One code path for every world size,
// a world of one included.
//
// Layout (llm.c style: sharding is offset arithmetic). For each unit the trainable
// parameters are packed, in model order, into one flat buffer padded to a multiple of
// the world size n; rank r owns elements [r*k, (r+1)*k), k = padded/n. Under stage 3 the
// frozen parameters of a unit get a flat buffer of their own, sharded the same way.
// Parameters are rebound (Tensor::set_data) to views of the flat buffers, so modules keep
// working on their own parameter tensors.
//
//   stage 0: full params, full grads all-reduced per unit, full optimizer state
//   stage 1: + optimizer state only for the owned slice; params all-gathered after the step
//   stage 2: + grads reduce-scattered per unit as soon as the unit's backward is done (the
//            rank keeps only its grad shard)
//   stage 3: + params sharded: a unit is all-gathered before its forward and again in its
//            backward (recompute through a custom autograd function, or kept alive until the
//            step with keep_params), and freed after use
//
// Activation checkpointing (gradient_checkpointing, HF's per-layer semantics) is the same
// recompute without the gather: each decoder-layer unit runs without grad in forward, keeps
// only its input, and is re-run under grad in backward, at every stage. The embedding and
// the final norm + head units are not checkpointed (HF checkpoints each decoder layer's
// __call__ only). Stage 3 without keep_params recomputes every unit anyway; with keep_params
// the decoder layers are still recomputed (parameters kept, activations not).
//
// Precision. Trainable tensors in fp32 are their own master weights. Trainable tensors in
// bf16 (full fine-tuning of a bf16 model) follow DeepSpeed's bf16 mode: the flat buffers are
// bf16 working weights (so stage 3 gathers, and stage 1/2 re-gathers, move 2 bytes per
// parameter); each rank keeps fp32 masters of the range it owns (the whole flat at stage 0),
// which AdamW updates with fp32 moments, and re-casts the working copy from them after each
// step. Gradients travel in bf16 (each micro-batch's, reduce-scattered; stage 0 all-reduces
// the step's sum once) and accumulate in fp32 buffers. Checkpoints carry the masters.
//
// Gradient sums (not means) are reduced: the trainer divides the loss by the label tokens
// of the whole global batch, so the sum over ranks is the gradient of the global loss.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "models/model.h"
#include "comm/comm.h"
#include "sharding/optimizer.h"

namespace ftrun::sharding {

struct ZeroConfig {
  int stage = 0;
  bool keep_params = false;  // stage 3: keep gathered units until the step (no recompute)
  AdamWOptions adam;
  // Recompute each decoder-layer unit in backward (see above). Off: stages 0-2 install no
  // unit runner at all, so they run exactly as without the engine.
  bool gradient_checkpointing = false;
};

struct MemoryStats {
  uint64_t param_bytes = 0;       // persistent parameter storage (full or shard)
  uint64_t grad_bytes = 0;        // persistent gradient storage (full or shard)
  uint64_t optimizer_bytes = 0;   // exp_avg + exp_avg_sq (+ fp32 master when params are not fp32)
  uint64_t peak_gathered_bytes = 0;  // largest set of units gathered at once (stage 3)
  uint64_t model_state() const { return param_bytes + grad_bytes + optimizer_bytes; }
};

class ZeroEngine {
 public:
  // `trainable` are the tensors to train (each a parameter of `model`), decay[i] whether
  // trainable[i] gets weight decay, lr_scale[i] its learning-rate multiplier (LoRA+; empty =
  // 1 for all). A flat shard concatenates several tensors, so the optimizer steps each
  // tensor's owned segment with its own scale, at every stage and world size.
  ZeroEngine(models::CausalLM& model, const std::vector<at::Tensor>& trainable,
             const std::vector<bool>& decay, std::shared_ptr<comm::Comm> comm, ZeroConfig cfg,
             const std::vector<double>& lr_scale = {});
  ~ZeroEngine();
  ZeroEngine(const ZeroEngine&) = delete;
  ZeroEngine& operator=(const ZeroEngine&) = delete;

  // One optimizer step: begin(), backward(loss) per micro-batch, reduce_and_clip(), step().
  void begin();
  void backward(const at::Tensor& loss);
  double reduce_and_clip(double max_norm);  // returns the global grad norm before clipping
  void step(double lr);

  // Runs fn with every trainable parameter holding its full value on every rank (stage 3
  // gathers them for the call); all ranks must call it together.
  void with_full_trainable(const std::function<void()>& fn);

  // Streams the whole model unit by unit for a consolidated save: each unit is gathered
  // (stage 3), fn receives its parameters by model name with their full values, and the
  // unit is freed before the next, so no rank ever holds the whole model at once. Every
  // rank must call it; fn runs on every rank.
  using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
  void for_each_unit_full(const std::function<void(const NamedTensors&)>& fn);

  // Optimizer state for checkpoints, in flat coordinates that do not depend on the world
  // size: unit u's trainable parameters are packed in model order, `params` gives each
  // one's [offset, offset + numel). A rank owns ranges of those flats; a checkpoint written
  // by any world size and stage can fill any other's, range by range.
  struct UnitLayout {
    int64_t unit = 0;
    int64_t numel = 0;
    std::vector<std::tuple<std::string, int64_t, int64_t>> params;  // name, offset, numel
  };
  std::vector<UnitLayout> layout() const;
  struct OwnedState {
    int64_t unit = 0, lo = 0, hi = 0;  // this rank's flat range [lo, hi) of that unit
    at::Tensor exp_avg, exp_avg_sq;    // [hi - lo]
    at::Tensor master;                 // [hi - lo] fp32 masters; undefined unless mixed precision
  };
  std::vector<OwnedState> export_optimizer() const;
  // fetch(unit, which, lo, hi) returns elements [lo, hi) of the saved flat `which`
  // ("exp_avg", "exp_avg_sq", or "master" when the working weights are bf16) of that unit.
  // For "master" an undefined or empty tensor means the checkpoint has none: the masters
  // then stay the working weights' values.
  using Fetch = std::function<at::Tensor(int64_t unit, const std::string& which, int64_t lo, int64_t hi)>;
  void import_optimizer(int64_t steps, const Fetch& fetch);

  const ZeroConfig& config() const { return cfg_; }
  comm::Comm& comm() { return *comm_; }
  MemoryStats memory() const;
  int64_t steps() const { return optimizer_steps_; }
  size_t num_units() const;

  struct Impl;

 private:
  bool runner_installed() const;  // stage 3 or gradient_checkpointing: the engine runs the units

  std::unique_ptr<Impl> impl_;
  ZeroConfig cfg_;
  std::shared_ptr<comm::Comm> comm_;
  int64_t optimizer_steps_ = 0;
};

}  // namespace ftrun::sharding
