// The counting CPU allocator (see alloc_counter.h).
#include "testing/alloc_counter.h"

#include <c10/core/CPUAllocator.h>

#include <atomic>

namespace ftrun::testing {
namespace {

std::atomic<int64_t> g_live{0}, g_peak{0};

struct Record {
  c10::DataPtr inner;
  size_t bytes;
};

void release(void* ctx) {
  auto* rec = static_cast<Record*>(ctx);
  g_live -= int64_t(rec->bytes);
  delete rec;  // frees the wrapped allocation
}

}  // namespace

#if TORCH_VERSION_MAJOR >= 2
c10::DataPtr AllocationCounter::allocate(size_t n) {
#else
c10::DataPtr AllocationCounter::allocate(size_t n) const {
#endif
  auto* rec = new Record{inner_->allocate(n), n};
  int64_t now = (g_live += int64_t(n));
  int64_t seen = g_peak.load();
  while (now > seen && !g_peak.compare_exchange_weak(seen, now)) {
  }
  void* data = rec->inner.get();
  return {data, rec, &release, rec->inner.device()};
}

int64_t AllocationCounter::live() { return g_live.load(); }
int64_t AllocationCounter::peak() { return g_peak.load(); }
void AllocationCounter::reset_peak() { g_peak.store(g_live.load()); }
void AllocationCounter::reset() {
  g_live = 0;
  g_peak = 0;
}

int64_t peak_extra_bytes(const std::function<void()>& fn) {
  c10::Allocator* original = c10::GetCPUAllocator();
  AllocationCounter counting(original);
  c10::SetCPUAllocator(&counting);
  AllocationCounter::reset();
  try {
    fn();
  } catch (...) {
    c10::SetCPUAllocator(original);
    throw;
  }
  c10::SetCPUAllocator(original);
  return AllocationCounter::peak();
}

}  // namespace ftrun::testing
