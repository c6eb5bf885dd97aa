// runtime/: where a training run's tensors live. One rule for the trainer, the launcher and the
// inference commands: the config's `device` (auto | cpu | cuda) and HF's training_args.use_cpu
// pick the CPU or the GPU cuda:LOCAL_RANK (CUDA_VISIBLE_DEVICES is applied by the CUDA runtime,
// so LOCAL_RANK indexes the visible GPUs, as under torchrun). A request the build or the
// machine cannot meet is an error that names the key and what is missing, never a silent CPU
// run. Batches cross to the GPU through pinned host memory, asynchronously; peak CUDA memory is
// read from the caching allocator. The CPU build (libtorch 1.13) compiles the same calls.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <optional>
#include <string>

#include "data/collator.h"
#include "runtime/config.h"

namespace ftrun::runtime {

// Whether this ftrun was built against a libtorch with CUDA (the CUDA flavour).
bool build_has_cuda();
// GPUs this process can use (0 on a CPU build or without a driver/GPU).
int visible_cuda_devices();

// The device of a rank whose node-local index is `local_rank`:
//   use_cpu: true or device: cpu -> cpu;
//   device: auto -> cuda:local_rank when build_has_cuda() and a GPU is visible, else cpu;
//   device: cuda -> cuda:local_rank, or an error naming the config file, the key and why (a
//   CPU-only build, no visible GPU, or fewer visible GPUs than local ranks).
// Also makes that GPU the current one (c10's device guard), so allocations without an
// explicit device and NCCL use it.
c10::Device resolve_device(const Config& cfg, int local_rank);
// The same with LOCAL_RANK (or mpirun's / srun's local index) from the environment.
c10::Device resolve_device(const Config& cfg);

// The comm backend to ask init_comm for: `auto` on the CPU is gloo (not nccl, even on a
// GPU machine); on a GPU, auto is nccl and gloo/mpi are refused (they move host memory).
std::string comm_backend_for(const Config& cfg, const c10::Device& device, int world_size);

// A host tensor on `device`: itself on the CPU; on a GPU copied through pinned memory without
// blocking the host (the copy is ordered on the current stream before later kernels).
at::Tensor to_device(const at::Tensor& host, const c10::Device& device);

// A collated batch's tensors moved with to_device (returns the batch itself on the CPU).
data::Batch batch_on(const data::Batch& batch, const c10::Device& device);

// Peak CUDA memory of `device` since the last reset, in MiB (the caching allocator's
// allocated and reserved peaks, torch.cuda.max_memory_allocated / max_memory_reserved).
struct CudaPeak {
  double allocated_mib = 0, reserved_mib = 0;
};
std::optional<CudaPeak> cuda_peak_memory(const c10::Device& device);  // nullopt on the CPU
void reset_cuda_peak_memory(const c10::Device& device);

// The default CUDA generator's state of `device` (for checkpoints: dropout on the GPU draws
// from it), and its restore. Undefined tensor / no-op on the CPU.
at::Tensor cuda_rng_state(const c10::Device& device);
void set_cuda_rng_state(const c10::Device& device, const at::Tensor& state);

}  // namespace ftrun::runtime
