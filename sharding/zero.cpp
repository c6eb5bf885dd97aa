// The ZeRO engine (see zero.h): flat per-unit buffers, per-stage gradient reduction,
// sharded AdamW (on fp32 masters when the working weights are bf16), and recompute through
// a custom autograd function (stage 3's gather and recompute, and activation checkpointing at
// every stage, are one code path).
#include "sharding/zero.h"
#include "models/torch_compat.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <cmath>
#include <set>
#include <sstream>

namespace ftrun::sharding {

namespace {

uint64_t bytes_of(const at::Tensor& t) { return t.defined() ? uint64_t(t.numel()) * t.element_size() : 0; }

struct Slot {
  std::string name;
  at::Tensor param;  // the model's parameter (rebound to views of the flat buffer)
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
  bool decay = false;
  double lr_scale = 1.0;  // learning-rate multiplier of this tensor (LoRA+)
};

// One flat buffer: slots packed in model order, padded to a multiple of the world size.
struct Flat {
  std::vector<Slot> slots;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);  // where its parameters live (a GPU or the CPU)
  int64_t numel = 0, padded = 0, shard = 0;
  at::Tensor full;   // [padded] when present (always for trainable under stages 0-2)
  at::Tensor local;  // [shard] the owned slice (stage 3's persistent storage)

  void add(const std::string& name, const at::Tensor& p, bool decay, double lr_scale = 1.0) {
    if (!slots.empty() && p.scalar_type() != dtype) {
      throw std::runtime_error("ZeRO: parameter " + name + " has dtype " + std::string(c10::toString(p.scalar_type())) +
                               " but its unit's other parameters are " + c10::toString(dtype) +
                               " (one dtype per unit is supported)");
    }
    if (!slots.empty() && p.device() != device)
      throw std::runtime_error("ZeRO: parameter " + name + " is on " + p.device().str() + " but its unit's other parameters are on " +
                               device.str());
    dtype = p.scalar_type();
    device = p.device();
    slots.push_back({name, p, p.sizes().vec(), numel, p.numel(), decay, lr_scale});
    numel += p.numel();
  }
  void finish(int world) {
    padded = (numel + world - 1) / world * world;
    shard = padded / world;
  }
  // Packs the parameters' current values (which every rank holds at construction).
  at::TensorOptions options() const { return torch::TensorOptions().dtype(dtype).device(device); }
  at::Tensor pack() const {
    auto flat = torch::zeros({padded}, options());
    for (const auto& s : slots) flat.narrow(0, s.offset, s.numel).copy_(s.param.detach().reshape({-1}));
    return flat;
  }
  void bind(const at::Tensor& storage) {
    for (auto& s : slots) s.param.set_data(storage.narrow(0, s.offset, s.numel).view(s.shape));
  }
  void unbind() {
    auto empty = torch::empty({0}, options());
    for (auto& s : slots) s.param.set_data(empty);
  }
};

}  // namespace

struct ZeroEngine::Impl {
  struct Unit {
    int64_t index = 0;
    // The stage this unit runs at: the engine's, except for the persistent unit (parameters
    // of no model unit, e.g. a prefix encoder used inside every layer), which is never
    // sharded and runs at most stage 1 semantics.
    int stage = 0;
    Flat train, frozen;
    at::Tensor grad_full;   // stages 0/1: [padded], fp32
    at::Tensor grad_shard;  // stages 1-3: [shard], fp32
    // Mixed precision (trainable working weights in bf16): the fp32 master copy of the owned
    // range [master_lo, master_lo + master.numel()) of the trainable flat, which AdamW
    // updates; the working copy is re-cast from it after every step. Undefined in fp32.
    at::Tensor master;
    int64_t master_lo = 0;
    bool mixed() const { return master.defined(); }
    // The working weights of the owned range [lo, hi) (stage 3: the local shard; stages 0-2:
    // that range of the full flat), the values the masters mirror.
    at::Tensor owned_working(int64_t lo, int64_t hi) const {
      return stage == 3 ? train.local : train.full.narrow(0, lo, hi - lo);
    }
    int pending = 0;        // stage 2 / keep_params: trainable grads still to arrive this micro-batch
    bool gathered = false;
  };

  models::CausalLM& model;
  comm::Comm& comm;
  ZeroConfig cfg;
  int rank, world;
  std::vector<Unit> units;
  std::unique_ptr<AdamW> optimizer;
  std::vector<at::Tensor> opt_grads;  // views matching the optimizer's parameter segments
  std::vector<bool> opt_replicated;   // whether that segment's gradient is the same on every rank
  struct Segment {
    size_t unit;
    int64_t start, len;  // in the unit's trainable flat
  };
  std::vector<Segment> segments;      // one per optimizer tensor
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keep post-hooks alive
  std::vector<models::CausalLM::UnitFn> saved_fns;  // recomputed units' functions of this step
  at::Tensor token;                                 // makes every recomputed unit's output require grad
  // Per unit index: whether its forward runs without grad and is recomputed in backward
  // (every unit under stage 3 without keep_params; the decoder layers under
  // gradient_checkpointing). The persistent unit never runs through the runner.
  std::vector<bool> recompute;
  uint64_t gathered_bytes = 0, peak_gathered = 0;

  Impl(models::CausalLM& m, comm::Comm& c, ZeroConfig config) : model(m), comm(c), cfg(config) {
    rank = comm.rank();
    world = comm.world_size();
  }


  // --- gathering (stage 3) -------------------------------------------------------------
  // Units whose all-gather is in flight (prefetched), by index.
  std::map<size_t, std::vector<std::unique_ptr<comm::Comm::Pending>>> inflight;

  void start_gather(Unit& u, bool async) {
    for (Flat* f : {&u.train, &u.frozen}) {
      if (f->slots.empty()) continue;
      f->full = torch::empty({f->padded}, f->options());
      if (async) inflight[size_t(u.index)].push_back(comm.all_gather_async(f->local, f->full));
      else comm.all_gather(f->local, f->full);
      gathered_bytes += bytes_of(f->full);
    }
    peak_gathered = std::max(peak_gathered, gathered_bytes);
  }
  void finish_gather(Unit& u) {
    auto it = inflight.find(size_t(u.index));
    if (it != inflight.end()) {
      auto pending = std::move(it->second);
      inflight.erase(it);
      for (auto& p : pending) p->wait();
    }
    for (Flat* f : {&u.train, &u.frozen})
      if (!f->slots.empty()) f->bind(f->full);
    u.gathered = true;
  }
  bool in_flight(const Unit& u) const { return inflight.count(size_t(u.index)) > 0; }

  void gather(Unit& u) {
    if (u.gathered) return;
    if (!in_flight(u)) start_gather(u, false);
    finish_gather(u);
  }
  // Starts gathering unit `index` (the next one to run) while the current one computes.
  void prefetch(int64_t index) {
    if (index < 0 || size_t(index) >= units.size()) return;
    auto& u = units[size_t(index)];
    if (u.stage != 3 || u.gathered || in_flight(u) || (u.train.slots.empty() && u.frozen.slots.empty())) return;
    start_gather(u, true);
  }
  void release(Unit& u) {
    if (in_flight(u)) finish_gather(u);  // a prefetch nobody used: complete it, then free
    if (!u.gathered) return;
    for (Flat* f : {&u.train, &u.frozen}) {
      if (f->slots.empty()) continue;
      gathered_bytes -= bytes_of(f->full);
      f->unbind();
      f->full = at::Tensor();
    }
    u.gathered = false;
  }

  // --- gradient reduction --------------------------------------------------------------
  // Packs the unit's parameter grads (full size) into a flat buffer and resets them.
  at::Tensor take_grads(Unit& u) {
    auto flat = torch::zeros({u.train.padded}, u.train.options());
    for (auto& s : u.train.slots) {
      auto& g = s.param.mutable_grad();
      if (g.defined()) flat.narrow(0, s.offset, s.numel).copy_(g.reshape({-1}));
      g = at::Tensor();
    }
    return flat;
  }
  // Stages 2 and 3 start a finished unit's reduce-scatter asynchronously (the hooks and the
  // recompute run units in reverse), so it overlaps the next unit's backward; it is completed
  // when the next one is issued (at most one in flight: one extra wire buffer of memory) and
  // at the end of backward(), before anything reads the shards. Completion order is issue
  // order, so each shard receives the same additions in the same order as when synchronous:
  // results are bit-identical. Every rank issues the same collectives in the same order.
  // Stage 1 (and the persistent unit) reduce synchronously, after finishing what is in flight.
  struct Scattering {
    Unit* unit;
    at::Tensor wire, part;  // the packed gradients (read until wait()) and this rank's sum
    std::unique_ptr<comm::Comm::Pending> pending;
  };
  std::vector<Scattering> scattering;
  void finish_scatters() {
    auto all = std::move(scattering);
    scattering.clear();
    for (auto& s : all) {
      s.pending->wait();
      s.unit->grad_shard.add_(s.part);
    }
  }
  void reduce_scatter_into_shard(Unit& u, const at::Tensor& flat) {
    finish_scatters();
    auto part = torch::empty({u.train.shard}, flat.options());
    if (u.stage < 2) {
      comm.reduce_scatter_sum(flat, part);
      u.grad_shard.add_(part);
      return;
    }
    auto pending = comm.reduce_scatter_async(flat, part);
    scattering.push_back({&u, flat, part, std::move(pending)});
  }
  bool has_pending_grads(const Unit& u) const {
    for (const auto& s : u.train.slots)
      if (s.param.grad().defined()) return true;
    return false;
  }

  void on_grad_ready(size_t unit_index) {
    auto& u = units[unit_index];
    if (--u.pending > 0) return;
    reduce_scatter_into_shard(u, take_grads(u));
  }

  static bool hooked(const Unit& u, const ZeroConfig& c) { return u.stage == 2 || (u.stage == 3 && c.keep_params); }
  // Stage 3 without keep_params: the unit is gathered only while it runs, and its gradients
  // are reduce-scattered by the recompute itself (no hooks).
  bool sharded(const Unit& u) const { return u.stage == 3 && !cfg.keep_params; }

  void install_grad_hooks() {
    for (size_t ui = 0; ui < units.size(); ++ui) {
      if (!hooked(units[ui], cfg)) continue;
      for (auto& s : units[ui].train.slots) {
        auto acc = torch::autograd::impl::grad_accumulator(s.param);
        acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, ui](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
              on_grad_ready(ui);
              return outputs;
            }));
        accumulators.push_back(acc);
      }
    }
  }
};

namespace {

// The autocast state (CPU and CUDA) a unit's forward ran under, re-entered for its recompute
// (backward runs outside the trainer's autocast scope), as torch.utils.checkpoint does:
// otherwise a bf16 forward would be recomputed, and differentiated, in fp32.
using AutocastState = compat::AutocastState;
class AutocastScope {
 public:
  explicit AutocastScope(AutocastState s)
      : prev_(AutocastState::current()), changed_(s != prev_) {
    if (!changed_) return;
    s.apply();
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!changed_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    prev_.apply();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  AutocastState prev_;
  bool changed_;
};

// A recomputed unit: forward runs it without grad and keeps only its input (and the CPU
// generator's state, so that dropout replays the same numbers, as torch.utils.checkpoint's
// preserve_rng_state); backward re-runs it under grad and back-propagates through it.
// Sharded stage 3 also gathers the unit around both runs, frees it after each, and
// reduce-scatters the unit's grads itself; otherwise (activation checkpointing at stages
// 0-2, or stage 3 with keep_params) the grads land in .grad, where the stage's usual
// reduction (hooks or reduce_and_clip) finds them. The token input makes the output require
// grad even when neither the input nor the unit's own parameters do (frozen embeddings with
// LoRA; P-Tuning v2, whose trainable prefix comes in through the prefix provider), so the
// backward always runs. Nothing is assumed about the output's shape.
struct UnitFunction : public torch::autograd::Function<UnitFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& token,
                            int64_t impl_ptr, int64_t unit, int64_t fn_index) {
    auto* impl = reinterpret_cast<ZeroEngine::Impl*>(impl_ptr);
    auto& u = impl->units[size_t(unit)];
    const bool sharded = impl->sharded(u);
    ctx->saved_data["impl"] = impl_ptr;
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["fn"] = fn_index;
    ctx->saved_data["rng"] = at::detail::getDefaultCPUGenerator().get_state();
    // On a GPU dropout draws from the device's generator: its state is replayed too, as
    // torch.utils.checkpoint's preserve_rng_state does.
    if (x.is_cuda()) ctx->saved_data["cuda_rng"] = at::globalContext().defaultGenerator(x.device()).get_state();
    auto autocast = AutocastState::current();
    ctx->saved_data["autocast"] = autocast.cpu;
    ctx->saved_data["autocast_dtype"] = int64_t(autocast.cpu_dtype);
    ctx->saved_data["autocast_cuda"] = autocast.cuda;
    ctx->saved_data["autocast_cuda_dtype"] = int64_t(autocast.cuda_dtype);
    ctx->save_for_backward({x});
    if (u.stage == 3) impl->gather(u);  // keep_params: stays gathered until the step
    if (sharded) impl->prefetch(unit + 1);
    at::Tensor out;
    {
      torch::NoGradGuard ng;
      out = impl->saved_fns[size_t(fn_index)](x);
    }
    if (sharded) impl->release(u);
    (void)token;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* impl = reinterpret_cast<ZeroEngine::Impl*>(ctx->saved_data["impl"].toInt());
    auto unit = ctx->saved_data["unit"].toInt();
    auto& u = impl->units[size_t(unit)];
    const bool sharded = impl->sharded(u);
    auto x = ctx->get_saved_variables()[0];
    // A float input may carry grads onward (or the unit may use trainable tensors of no unit,
    // such as a prefix encoder), so it is always recomputed; the input's own grad is only
    // computed when autograd wants it (LoRA's frozen embeddings: it does not).
    const bool float_input = x.is_floating_point();
    const bool want_input_grad = float_input && ctx->needs_input_grad(0);
    at::Tensor grad_x;
    if (float_input || !u.train.slots.empty()) {
      if (u.stage == 3) impl->gather(u);
      if (sharded) impl->prefetch(unit - 1);  // backward runs the units in reverse
      auto xin = x.detach();
      if (want_input_grad) xin.requires_grad_(true);
      auto gen = at::detail::getDefaultCPUGenerator();
      auto current = gen.get_state();
      gen.set_state(ctx->saved_data["rng"].toTensor());
      const bool cuda_rng = ctx->saved_data.count("cuda_rng") > 0;
      at::Generator cuda_gen;
      at::Tensor cuda_current;
      if (cuda_rng) {
        cuda_gen = at::globalContext().defaultGenerator(x.device());
        cuda_current = cuda_gen.get_state();
        cuda_gen.set_state(ctx->saved_data["cuda_rng"].toTensor());
      }
      at::Tensor out;
      {
        torch::AutoGradMode enable(true);
        AutocastScope autocast({ctx->saved_data["autocast"].toBool(), ctx->saved_data["autocast_cuda"].toBool(),
                                at::ScalarType(ctx->saved_data["autocast_dtype"].toInt()),
                                at::ScalarType(ctx->saved_data["autocast_cuda_dtype"].toInt())});
        out = impl->saved_fns[size_t(ctx->saved_data["fn"].toInt())](xin);
      }
      gen.set_state(current);
      if (cuda_rng) cuda_gen.set_state(cuda_current);
      if (out.requires_grad() && grad_out[0].defined()) torch::autograd::backward({out}, {grad_out[0]});
      if (want_input_grad) grad_x = xin.grad();
      if (sharded) {
        if (!u.train.slots.empty()) impl->reduce_scatter_into_shard(u, impl->take_grads(u));
        impl->release(u);
      }
    }
    return {grad_x, torch::zeros({}), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

ZeroEngine::ZeroEngine(models::CausalLM& model, const std::vector<at::Tensor>& trainable,
                       const std::vector<bool>& decay, std::shared_ptr<comm::Comm> comm, ZeroConfig cfg,
                       const std::vector<double>& lr_scale)
    : cfg_(cfg), comm_(std::move(comm)) {
  if (cfg.stage < 0 || cfg.stage > 3) throw std::invalid_argument("ZeRO stage must be 0, 1, 2 or 3");
  if (decay.size() != trainable.size()) throw std::invalid_argument("ZeRO: one decay flag per trainable tensor");
  if (!lr_scale.empty() && lr_scale.size() != trainable.size())
    throw std::invalid_argument("ZeRO: one learning-rate scale per trainable tensor");
  impl_ = std::make_unique<Impl>(model, *comm_, cfg);
  auto& I = *impl_;

  std::map<const void*, size_t> train_index;
  for (size_t i = 0; i < trainable.size(); ++i) {
    // fp32 tensors are their own masters; bf16 ones are working copies beside fp32 masters
    // (DeepSpeed's bf16 mode). fp16 would need loss scaling, which the engine does not do.
    const auto dt = trainable[i].scalar_type();
    if (dt != at::kFloat && dt != at::kBFloat16)
      throw std::runtime_error("ZeRO: trainable tensors must be float32 or bfloat16, got " +
                               std::string(c10::toString(dt)) + " (float16 needs loss scaling, which ftrun does not do)");
    train_index[trainable[i].unsafeGetTensorImpl()] = i;
  }
  auto prefixes = model.unit_prefixes();
  I.units.resize(prefixes.size() + 1);  // + the persistent unit
  for (size_t u = 0; u < I.units.size(); ++u) {
    I.units[u].index = int64_t(u);
    I.units[u].stage = u < prefixes.size() ? cfg.stage : std::min(cfg.stage, 1);
  }
  size_t matched = 0;
  for (auto& item : model.named_parameters()) {
    const auto& name = item.key();
    size_t unit = prefixes.size();
    for (size_t u = 0; u < prefixes.size() && unit == prefixes.size(); ++u)
      for (const auto& pre : prefixes[u])
        if (name.compare(0, pre.size(), pre) == 0) {
          unit = u;
          break;
        }
    auto it = train_index.find(item.value().unsafeGetTensorImpl());
    if (it != train_index.end()) {
      I.units[unit].train.add(name, item.value(), decay[it->second],
                              lr_scale.empty() ? 1.0 : lr_scale[it->second]);
      ++matched;
    } else if (I.units[unit].stage == 3) {
      I.units[unit].frozen.add(name, item.value(), false);
    }
  }
  if (matched != trainable.size())
    throw std::runtime_error("ZeRO: " + std::to_string(trainable.size() - matched) +
                             " trainable tensors are not parameters of the model");

  // Grad accumulators record the parameter's shape when created: make them while the
  // parameters still hold their full values, before stage 3 unbinds them.
  I.install_grad_hooks();

  // Buffers, bindings and the optimizer's segments (the owned part of each slot).
  std::vector<at::Tensor> seg_params;
  std::vector<bool> seg_decay;
  std::vector<double> seg_lr_scale;  // each segment steps with its tensor's scale
  for (auto& u : I.units) {
    u.train.finish(I.world);
    u.frozen.finish(I.world);
    if (u.stage == 3) {
      for (Flat* f : {&u.train, &u.frozen}) {
        if (f->slots.empty()) continue;
        f->local = f->pack().narrow(0, int64_t(I.rank) * f->shard, f->shard).clone();
        f->unbind();
      }
    } else if (!u.train.slots.empty()) {
      u.train.full = u.train.pack();
      u.train.bind(u.train.full);
    }
    if (u.train.slots.empty()) continue;
    const auto fp32 = u.train.options().dtype(at::kFloat);  // gradients accumulate in fp32
    if (u.stage == 0) u.grad_full = torch::zeros({u.train.padded}, fp32);
    if (u.stage >= 1) u.grad_shard = torch::zeros({u.train.shard}, fp32);
    int64_t lo = u.stage == 0 ? 0 : int64_t(I.rank) * u.train.shard;
    int64_t hi = u.stage == 0 ? u.train.padded : lo + u.train.shard;
    if (u.train.dtype != at::kFloat) {
      // The masters start as the working weights' values (exactly representable in fp32).
      u.master = u.owned_working(lo, hi).to(at::kFloat);
      u.master_lo = lo;
    }
    for (const auto& s : u.train.slots) {
      int64_t a = std::max(lo, s.offset), b = std::min(hi, s.offset + s.numel);
      if (a >= b) continue;
      seg_params.push_back(u.mixed() ? u.master.narrow(0, a - lo, b - a)
                           : u.stage == 3 ? u.train.local.narrow(0, a - lo, b - a)
                                          : u.train.full.narrow(0, a, b - a));
      seg_decay.push_back(s.decay);
      seg_lr_scale.push_back(s.lr_scale);
      I.opt_grads.push_back(u.stage == 0 ? u.grad_full.narrow(0, a, b - a) : u.grad_shard.narrow(0, a - lo, b - a));
      I.opt_replicated.push_back(u.stage == 0);
      I.segments.push_back({size_t(u.index), a, b - a});
    }
  }
  I.optimizer = std::make_unique<AdamW>(seg_params, seg_decay, cfg.adam, seg_lr_scale);

  // Which units are recomputed. Units are (embedding, each decoder layer, final norm + head)
  // when a model has three or more; checkpointing takes the decoder layers only.
  const size_t model_units = prefixes.size();
  I.recompute.assign(I.units.size(), false);
  for (size_t u = 0; u < model_units; ++u)
    I.recompute[u] = I.sharded(I.units[u]) ||
                     (cfg.gradient_checkpointing && model_units >= 3 && u > 0 && u + 1 < model_units);

  // Without stage 3 or checkpointing no runner is installed: the model runs its units itself.
  if (runner_installed()) {
    I.token = torch::zeros({}, torch::TensorOptions().requires_grad(true));
    auto* impl = impl_.get();
    model.set_unit_runner([impl](int64_t unit, const models::CausalLM::UnitFn& fn, const at::Tensor& x) {
      auto& u = impl->units.at(size_t(unit));
      // Evaluation (no grad) has nothing to recompute later.
      if (torch::GradMode::is_enabled() && impl->recompute.at(size_t(unit))) {
        impl->saved_fns.push_back(fn);
        return UnitFunction::apply(x, impl->token, reinterpret_cast<int64_t>(impl), unit,
                                   int64_t(impl->saved_fns.size() - 1));
      }
      if (u.stage != 3) return fn(x);
      impl->gather(u);
      if (impl->cfg.keep_params) return fn(x);
      impl->prefetch(unit + 1);
      auto out = fn(x);
      impl->release(u);
      return out;
    });
  }
}

bool ZeroEngine::runner_installed() const { return cfg_.stage == 3 || cfg_.gradient_checkpointing; }

ZeroEngine::~ZeroEngine() {
  if (runner_installed()) impl_->model.set_unit_runner(nullptr);
}

size_t ZeroEngine::num_units() const { return impl_->units.size(); }

void ZeroEngine::begin() {
  impl_->saved_fns.clear();
  for (auto& u : impl_->units) {
    if (u.grad_full.defined()) u.grad_full.zero_();
    if (u.grad_shard.defined()) u.grad_shard.zero_();
    for (auto& s : u.train.slots) s.param.mutable_grad() = at::Tensor();
  }
}

void ZeroEngine::backward(const at::Tensor& loss) {
  auto& I = *impl_;
  for (auto& u : I.units) u.pending = int(u.train.slots.size());
  loss.backward();
  // Units whose hooks did not all fire (a parameter without a grad this micro-batch) are
  // reduced now, in unit order, so every rank issues the same collectives.
  for (auto& u : I.units)
    if (Impl::hooked(u, cfg_) && u.pending > 0 && !u.train.slots.empty()) {
      u.pending = 0;
      I.reduce_scatter_into_shard(u, I.take_grads(u));
    }
  I.finish_scatters();
  // Mixed precision: each micro-batch's bf16 gradients are folded into the fp32 buffers now,
  // so accumulation over micro-batches happens in fp32 (DeepSpeed's bf16 mode accumulates in
  // fp32 too). Stage 0 sums locally and all-reduces once per step; stage 1 reduce-scatters
  // each micro-batch's gradients (in bf16) into its fp32 shard. Stages 2 and 3 already did.
  for (auto& u : I.units) {
    if (!u.mixed() || u.stage > 1 || !I.has_pending_grads(u)) continue;
    if (u.stage == 0) u.grad_full.add_(I.take_grads(u));
    else I.reduce_scatter_into_shard(u, I.take_grads(u));
  }
  I.saved_fns.clear();  // the graph that referred to them is gone
}

double ZeroEngine::reduce_and_clip(double max_norm) {
  auto& I = *impl_;
  torch::NoGradGuard ng;
  I.finish_scatters();  // none after backward(); a guard for callers that skip it
  {
    for (auto& u : I.units) {
      if (u.train.slots.empty() || u.stage > 1) continue;
      if (u.mixed()) {
        // Gradients are in the fp32 buffers already (backward); stage 0 sums them over ranks
        // in the working dtype, as DeepSpeed communicates bf16 gradients.
        if (u.stage == 0 && I.world > 1) {
          auto wire = u.grad_full.to(u.train.dtype);
          comm_->all_reduce_sum(wire);
          u.grad_full.copy_(wire);
        }
      } else if (u.stage == 0) {
        u.grad_full.copy_(I.take_grads(u));
        comm_->all_reduce_sum(u.grad_full);
      } else {
        I.reduce_scatter_into_shard(u, I.take_grads(u));
      }
    }
  }
  // Global norm: every rank sums the squares of the gradient shards it owns and the sums
  // are added over ranks; replicated (stage 0) gradients are counted once, not per rank.
  auto sq = torch::zeros({1}, torch::TensorOptions().dtype(at::kDouble));
  double replicated = 0;
  bool any_sharded = false;
  // Each tensor's square sum is formed on its device as before, and all are read back in one
  // copy (one device sync instead of one per tensor); the host adds them in double in the
  // same order, so the norm is bit-identical.
  at::Tensor parts;
  if (!I.opt_grads.empty()) {
    std::vector<at::Tensor> sums;
    sums.reserve(I.opt_grads.size());
    for (const auto& g : I.opt_grads) sums.push_back(g.to(at::kDouble).pow(2).sum());
    parts = at::stack(sums).to(at::kCPU).contiguous();
  }
  for (size_t i = 0; i < I.opt_grads.size(); ++i) {
    double part = parts.data_ptr<double>()[i];
    if (I.opt_replicated[i]) replicated += part;
    else {
      sq += part;
      any_sharded = true;
    }
  }
  if (any_sharded && I.world > 1) comm_->all_reduce_sum(sq);
  double norm = std::sqrt(sq.item<double>() + replicated);
  if (max_norm > 0) {
    double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (coef < 1.0)
      for (auto& g : I.opt_grads) g.mul_(float(coef));
  }
  return norm;
}

void ZeroEngine::step(double lr) {
  auto& I = *impl_;
  torch::NoGradGuard ng;
  I.optimizer->step(lr, I.opt_grads);
  ++optimizer_steps_;
  // Mixed precision: the working copy of the owned range is the updated master, rounded.
  for (auto& u : I.units) {
    if (!u.mixed()) continue;
    u.owned_working(u.master_lo, u.master_lo + u.master.numel()).copy_(u.master);
  }
  {
    for (auto& u : I.units) {
      if (u.train.slots.empty() || (u.stage != 1 && u.stage != 2)) continue;
      auto mine = u.train.full.narrow(0, int64_t(I.rank) * u.train.shard, u.train.shard).clone();
      comm_->all_gather(mine, u.train.full);
    }
  }
  if (cfg_.stage == 3)
    for (auto& u : I.units) I.release(u);
}

void ZeroEngine::with_full_trainable(const std::function<void()>& fn) {
  auto& I = *impl_;
  if (cfg_.stage != 3) {
    fn();
    return;
  }
  torch::NoGradGuard ng;
  std::vector<size_t> gathered;
  for (size_t i = 0; i < I.units.size(); ++i) {
    auto& u = I.units[i];
    if (u.train.slots.empty() || u.gathered || u.stage != 3) continue;
    u.train.full = torch::empty({u.train.padded}, u.train.options());
    comm_->all_gather(u.train.local, u.train.full);
    u.train.bind(u.train.full);
    gathered.push_back(i);
  }
  try {
    fn();
  } catch (...) {
    for (auto i : gathered) I.units[i].train.unbind();
    throw;
  }
  for (auto i : gathered) {
    I.units[i].train.unbind();
    I.units[i].train.full = at::Tensor();
  }
}

void ZeroEngine::for_each_unit_full(const std::function<void(const NamedTensors&)>& fn) {
  auto& I = *impl_;
  torch::NoGradGuard ng;
  if (cfg_.stage != 3) {
    NamedTensors all;
    for (const auto& p : I.model.named_parameters()) all.emplace_back(p.key(), p.value());
    fn(all);
    return;
  }
  std::set<const void*> in_units;
  for (auto& u : I.units) {
    if (u.stage != 3 || (u.train.slots.empty() && u.frozen.slots.empty())) continue;
    bool was = u.gathered;
    I.gather(u);
    NamedTensors tensors;
    for (const Flat* f : {&u.train, &u.frozen})
      for (const auto& slot : f->slots) {
        int64_t want = 1;
        for (auto d : slot.shape) want *= d;
        if (slot.param.numel() != want)
          throw std::runtime_error("ZeRO: gathered " + slot.name + " has " + std::to_string(slot.param.numel()) +
                                   " elements, expected " + std::to_string(want) + " (refusing to save it)");
        tensors.emplace_back(slot.name, slot.param);
        in_units.insert(slot.param.unsafeGetTensorImpl());
      }
    try {
      fn(tensors);
    } catch (...) {
      if (!was) I.release(u);
      throw;
    }
    if (!was) I.release(u);
  }
  NamedTensors rest;  // whole on every rank: the persistent unit's parameters
  for (const auto& p : I.model.named_parameters())
    if (!in_units.count(p.value().unsafeGetTensorImpl())) rest.emplace_back(p.key(), p.value());
  if (!rest.empty()) fn(rest);
}

std::vector<ZeroEngine::UnitLayout> ZeroEngine::layout() const {
  std::vector<UnitLayout> out;
  for (const auto& u : impl_->units) {
    if (u.train.slots.empty()) continue;
    UnitLayout l;
    l.unit = u.index;
    l.numel = u.train.numel;
    for (const auto& s : u.train.slots) l.params.emplace_back(s.name, s.offset, s.numel);
    out.push_back(l);
  }
  return out;
}

std::vector<ZeroEngine::OwnedState> ZeroEngine::export_optimizer() const {
  const auto& I = *impl_;
  std::map<size_t, OwnedState> by_unit;
  for (size_t i = 0; i < I.segments.size(); ++i) {
    const auto& seg = I.segments[i];
    const auto& u = I.units[seg.unit];
    auto& st = by_unit[seg.unit];
    if (!st.exp_avg.defined()) {
      st.unit = u.index;
      st.lo = u.stage == 0 ? 0 : std::min<int64_t>(int64_t(I.rank) * u.train.shard, u.train.numel);
      st.hi = u.stage == 0 ? u.train.numel : std::min<int64_t>(st.lo + u.train.shard, u.train.numel);
      // On the optimizer's device: a checkpoint copies each tensor to the host as it writes it.
      const auto fp32 = u.train.options().dtype(at::kFloat);
      st.exp_avg = torch::zeros({st.hi - st.lo}, fp32);
      st.exp_avg_sq = torch::zeros({st.hi - st.lo}, fp32);
      if (u.mixed()) st.master = u.master.narrow(0, st.lo - u.master_lo, st.hi - st.lo).clone();
    }
    st.exp_avg.narrow(0, seg.start - st.lo, seg.len).copy_(I.optimizer->exp_avg()[i]);
    st.exp_avg_sq.narrow(0, seg.start - st.lo, seg.len).copy_(I.optimizer->exp_avg_sq()[i]);
  }
  std::vector<OwnedState> out;
  for (auto& kv : by_unit) out.push_back(kv.second);
  return out;
}

void ZeroEngine::import_optimizer(int64_t steps, const Fetch& fetch) {
  auto& I = *impl_;
  torch::NoGradGuard ng;
  for (size_t i = 0; i < I.segments.size(); ++i) {
    const auto& seg = I.segments[i];
    auto& u = I.units[seg.unit];
    auto unit = u.index;
    if (u.mixed()) {
      // The fp32 masters: without them the resumed run would restart from the rounded bf16
      // weights and not continue bit for bit. A checkpoint of an fp32 run has none (its
      // weights were the masters, so the working weights loaded from it are exact).
      auto t = fetch(unit, "master", seg.start, seg.start + seg.len);
      if (t.defined() && t.numel() == seg.len) {
        u.master.narrow(0, seg.start - u.master_lo, seg.len).copy_(t);
        u.owned_working(u.master_lo, u.master_lo + u.master.numel()).narrow(0, seg.start - u.master_lo, seg.len).copy_(t);
      } else if (t.defined() && t.numel() != 0) {
        throw std::runtime_error("ZeRO: saved master of unit " + std::to_string(unit) + " has " +
                                 std::to_string(t.numel()) + " values for elements [" + std::to_string(seg.start) +
                                 ", " + std::to_string(seg.start + seg.len) + ")");
      }
    }
    for (const char* which : {"exp_avg", "exp_avg_sq"}) {
      auto t = fetch(unit, which, seg.start, seg.start + seg.len);
      if (t.numel() != seg.len)
        throw std::runtime_error("ZeRO: saved " + std::string(which) + " of unit " + std::to_string(unit) +
                                 " has no values for elements [" + std::to_string(seg.start) + ", " +
                                 std::to_string(seg.start + seg.len) + ")");
      auto& dst = std::string(which) == "exp_avg" ? I.optimizer->mutable_exp_avg()[i] : I.optimizer->mutable_exp_avg_sq()[i];
      dst.copy_(t.view_as(dst));
    }
  }
  I.optimizer->set_steps(steps);
  optimizer_steps_ = steps;
}

MemoryStats ZeroEngine::memory() const {
  const auto& I = *impl_;
  MemoryStats m;
  for (const auto& u : I.units) {
    m.param_bytes += u.stage == 3 ? bytes_of(u.train.local) + bytes_of(u.frozen.local) : bytes_of(u.train.full);
    m.grad_bytes += bytes_of(u.grad_full) + bytes_of(u.grad_shard);
    // Stage 1 accumulates full gradients in the parameters' .grad across micro-batches
    // (mixed precision: within one micro-batch's backward, in the working dtype).
    if (u.stage == 1) m.grad_bytes += uint64_t(u.train.numel) * c10::elementSize(u.train.dtype);
    m.optimizer_bytes += bytes_of(u.master);
  }
  {
    // Frozen weights stay whole on every rank below stage 3 (and in the persistent unit).
    std::set<const void*> trained;
    for (const auto& u : I.units) {
      for (const auto& s : u.train.slots) trained.insert(s.param.unsafeGetTensorImpl());
      for (const auto& s : u.frozen.slots) trained.insert(s.param.unsafeGetTensorImpl());
    }
    for (const auto& p : I.model.parameters())
      if (!trained.count(p.unsafeGetTensorImpl())) m.param_bytes += bytes_of(p);
  }
  for (const auto& t : I.optimizer->exp_avg()) m.optimizer_bytes += bytes_of(t);
  for (const auto& t : I.optimizer->exp_avg_sq()) m.optimizer_bytes += bytes_of(t);
  m.peak_gathered_bytes = I.peak_gathered;
  return m;
}

}  // namespace ftrun::sharding
