// The few libtorch API differences between Debian's 1.13 (the default build) and 2.x (the
// CUDA flavour, .ci/build-cuda) that more than one file meets, in one place: autocast's
// per-device getters and setters (1.13 has only the cpu_/gpu_ spellings; 2.x deprecates them
// with a warning on every call), and autocast's state on both devices. Header-only; include where ATen is already included.
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace ftrun::compat {

// Whether autocast is on for `device` (kCPU or kCUDA), and its lower dtype there.
inline bool autocast_enabled(at::DeviceType device) {
#if TORCH_VERSION_MAJOR >= 2
  return at::autocast::is_autocast_enabled(device);
#else
  return device == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

inline at::ScalarType autocast_dtype(at::DeviceType device) {
#if TORCH_VERSION_MAJOR >= 2
  return at::autocast::get_autocast_dtype(device);
#else
  return device == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void set_autocast(at::DeviceType device, bool enabled, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR >= 2
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == at::kCUDA) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

// Autocast's state on both device types ftrun trains on. bf16: true turns autocast on for
// both, so the same code autocasts wherever the tensors are (the CUDA switch does nothing to
// CPU tensors, so a CPU run is unchanged); recomputes re-enter both as they were.
struct AutocastState {
  bool cpu = false, cuda = false;
  at::ScalarType cpu_dtype = at::kBFloat16, cuda_dtype = at::kBFloat16;
  static AutocastState current() {
    return {autocast_enabled(at::kCPU), autocast_enabled(at::kCUDA), autocast_dtype(at::kCPU),
            autocast_dtype(at::kCUDA)};
  }
  static AutocastState bf16() { return {true, true, at::kBFloat16, at::kBFloat16}; }
  void apply() const {
    set_autocast(at::kCPU, cpu, cpu_dtype);
    set_autocast(at::kCUDA, cuda, cuda_dtype);
  }
  bool operator==(const AutocastState& o) const {
    return cpu == o.cpu && cuda == o.cuda && cpu_dtype == o.cpu_dtype && cuda_dtype == o.cuda_dtype;
  }
  bool operator!=(const AutocastState& o) const { return !(*this == o); }
};

}  // namespace ftrun::compat
