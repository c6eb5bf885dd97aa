// Device choice, host-to-device batch copies, CUDA memory peaks and RNG state (see device.h).
// The CUDA-only calls (the caching allocator's statistics, set_device) are behind
// FTRUN_WITH_CUDA, which runtime/CMakeLists.txt sets for a libtorch with CUDA.
#include "runtime/device.h"

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdlib>
#include <stdexcept>

#include "comm/rank_info.h"

#ifdef FTRUN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace ftrun::runtime {

bool build_has_cuda() {
#ifdef FTRUN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int visible_cuda_devices() { return build_has_cuda() ? int(torch::cuda::device_count()) : 0; }

namespace {
// The config's name in errors.
std::string config_name(const Config& cfg) { return cfg.path.empty() ? std::string("config") : cfg.path; }

std::string visible_desc() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v ? " (CUDA_VISIBLE_DEVICES=" + std::string(v) + ")" : std::string();
}
}  // namespace

c10::Device resolve_device(const Config& cfg, int local_rank) {
  const std::string where = config_name(cfg);
  if (cfg.training_args.use_cpu) {
    if (cfg.device == "cuda")
      throw std::runtime_error(where + ": device: cuda contradicts training_args.use_cpu: true; drop one of them");
    return c10::Device(c10::kCPU);
  }
  if (cfg.device == "cpu") return c10::Device(c10::kCPU);
  const int n = visible_cuda_devices();
  if (cfg.device == "auto" && n == 0) return c10::Device(c10::kCPU);
  if (cfg.device != "auto" && cfg.device != "cuda")
    throw std::runtime_error(where + ": device: expected auto, cpu or cuda, got '" + cfg.device + "'");
  if (!build_has_cuda())
    throw std::runtime_error(where + ": device: cuda needs the CUDA build of ftrun (this one is built against a "
                             "CPU-only libtorch); build it with .ci/build-cuda (README, GPUs), or use device: cpu");
  if (n == 0)
    throw std::runtime_error(where + ": device: cuda, but no CUDA GPU is usable here" + visible_desc() +
                             " (no driver, no GPU, or none visible); use device: cpu");
  if (local_rank < 0 || local_rank >= n)
    throw std::runtime_error(where + ": device: this rank's local index is " + std::to_string(local_rank) + ", but only " +
                             std::to_string(n) + " GPU(s) are visible" + visible_desc() +
                             ": start at most one process per visible GPU on each node");
  c10::Device d(c10::kCUDA, c10::DeviceIndex(local_rank));
#ifdef FTRUN_WITH_CUDA
  c10::cuda::set_device(d.index());
#endif
  return d;
}

c10::Device resolve_device(const Config& cfg) { return resolve_device(cfg, comm::detect_rank_info().local_rank); }

std::string comm_backend_for(const Config& cfg, const c10::Device& device, int world_size) {
  const std::string& b = cfg.comm_backend;
  if (world_size <= 1) return b;
  const std::string where = config_name(cfg);
  if (device.is_cuda()) {
    if (b == "gloo" || b == "mpi")
      throw std::runtime_error(where + ": comm_backend: " + b + " moves host memory, and this run trains on " +
                               device.str() + "; use comm_backend: nccl (or auto)");
    return "nccl";
  }
  if (b == "nccl" && !build_has_cuda())
    throw std::runtime_error(where + ": comm_backend: nccl needs the CUDA build of ftrun and GPUs; this build is "
                             "CPU-only (use gloo, mpi or auto)");
  if (b == "nccl")
    throw std::runtime_error(where + ": comm_backend: nccl moves GPU memory, and this run trains on the CPU (device: " +
                             cfg.device + (cfg.training_args.use_cpu ? ", use_cpu: true" : "") +
                             "); use gloo, mpi or auto");
  return b == "auto" ? "gloo" : b;
}

at::Tensor to_device(const at::Tensor& host, const c10::Device& device) {
  if (!host.defined() || host.device() == device) return host;
  if (device.is_cuda() && host.device().is_cpu()) return host.pin_memory().to(device, /*non_blocking=*/true);
  return host.to(device);
}

data::Batch batch_on(const data::Batch& batch, const c10::Device& device) {
  if (device.is_cpu()) return batch;
  data::Batch b = batch;
  b.input_ids = to_device(batch.input_ids, device);
  b.attention_mask = to_device(batch.attention_mask, device);
  b.labels = to_device(batch.labels, device);
  return b;
}

std::optional<CudaPeak> cuda_peak_memory(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
#ifdef FTRUN_WITH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  const auto agg = size_t(c10::CachingAllocator::StatType::AGGREGATE);
  const double mib = 1024.0 * 1024.0;
  return CudaPeak{double(stats.allocated_bytes[agg].peak) / mib, double(stats.reserved_bytes[agg].peak) / mib};
#else
  return std::nullopt;
#endif
}

void reset_cuda_peak_memory(const c10::Device& device) {
#ifdef FTRUN_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  (void)device;
#endif
}

at::Tensor cuda_rng_state(const c10::Device& device) {
  if (!device.is_cuda()) return at::Tensor();
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cuda_rng_state(const c10::Device& device, const at::Tensor& state) {
  if (!device.is_cuda() || !state.defined()) return;
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace ftrun::runtime
