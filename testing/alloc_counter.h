// testing/alloc_counter.h: counts the bytes held through libtorch's CPU allocator (every CPU
// tensor's storage) and their peak, by wrapping the allocator. Shared by the memory tests and
// benchmarks (tests/models/chunked_loss_test, bench/memory_bench, bench/loss_bench): exact
// byte counts where RSS would be noise.
#pragma once
#include <c10/core/Allocator.h>
#include <torch/version.h>

#include <cstdint>
#include <functional>

namespace ftrun::testing {

class AllocationCounter final : public c10::Allocator {
 public:
  explicit AllocationCounter(c10::Allocator* inner) : inner_(inner) {}
  // libtorch 2.x made allocate() non-const and added copy_data(); 1.13 has the const form.
#if TORCH_VERSION_MAJOR >= 2
  c10::DataPtr allocate(size_t n) override;
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
#else
  c10::DataPtr allocate(size_t n) const override;
#endif
  // No raw allocations: the context carries the wrapped allocation.
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  static int64_t live();        // bytes allocated through a counter and not yet freed
  static int64_t peak();        // the most `live` has been since the last reset
  static void reset_peak();     // peak := live
  static void reset();          // live := 0, peak := 0 (count only what comes next)

 private:
  c10::Allocator* inner_;
};

// Peak bytes allocated while fn runs, above what was held when it started: a counter is
// installed as the CPU allocator for fn's duration (and removed on return or throw).
int64_t peak_extra_bytes(const std::function<void()>& fn);

}  // namespace ftrun::testing
