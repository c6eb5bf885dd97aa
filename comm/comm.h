// comm/: every collective in ftrun. This folder owns the `Comm` interface below, its
// world-of-one form (single_comm.cpp), the backends (gloo_comm.cpp via c10d ProcessGroupGloo,
// mpi_comm.cpp over OpenMPI, nccl_comm.cpp in CUDA builds only; shared helpers in the private
// comm_impl.h), and how a process finds its peers: rank_info.h (who am I, from the launcher's
// environment) and rendezvous.h (init_comm). Those two live here, beside the backends, rather
// than with the launch code because rendezvous is what creates a backend: it agrees on rank 0's
// endpoint, opens the c10d store the backends connect through, and picks the backend by name,
// so splitting it off would put half of each backend's setup in another folder.
// Library ftrun_comm depends on libtorch (c10d) and MPI only; the ZeRO engine (sharding/) and
// the runtime use it, the launcher reaches it through the runtime.
//
// The collective-communication interface the ZeRO engine and the trainer use (c10d style:
// small, synchronous, unsupported operations fail loudly; all-gather and reduce-scatter also
// have asynchronous forms). A world of one needs no backend.
//
// Byte accounting: every call adds to stats() the bytes THIS rank sends under the
// bandwidth-optimal ring algorithm for that collective, with n = world size and S the bytes
// of the full tensor: all-reduce 2(n-1)/n * S, reduce-scatter (n-1)/n * S (S = the input of
// all ranks' shards), all-gather (n-1)/n * S (S = the gathered output), broadcast S on the
// root and 0 elsewhere. Those are the volumes the ZeRO paper's formulas use (stages 0-2:
// 2 x params per step; stage 3: 3 x), so tests can compare engine traffic with them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace ftrun::comm {

struct CommStats {
  uint64_t bytes_sent = 0;
  std::map<std::string, uint64_t> bytes_by_op;  // "all_reduce", "reduce_scatter", ...
  std::map<std::string, uint64_t> calls_by_op;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "single", "gloo", "mpi", "nccl"

  // All operations are synchronous and collective: every rank must call them in the same
  // order with tensors of the same shape and dtype. Tensors must be contiguous.
  virtual void all_reduce_sum(at::Tensor& t) = 0;
  // input: world_size * k elements (rank r's shard is [r*k, (r+1)*k)); output: k elements,
  // the sum over ranks of each rank's copy of shard `rank()`.
  virtual void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) = 0;
  // input: k elements; output: world_size * k elements, rank r's input at [r*k, (r+1)*k).
  virtual void all_gather(const at::Tensor& input, at::Tensor& output) = 0;
  virtual void broadcast(at::Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  // A collective in flight: wait() completes it (and raises its error). Issued and waited
  // on the calling thread only; collectives still start in the same order on every rank.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  // The asynchronous forms start a collective that may run while the caller computes (ZeRO-3
  // prefetch; a finished unit's gradient reduce-scatter during the next unit's backward). The
  // bytes are counted when it starts. Until wait() returns, the input must not change and
  // the output must not be read (the handle keeps both alive); the output may alias the input
  // as in the synchronous form. A bf16 reduce-scatter keeps the synchronous contract (summed
  // in fp32, rounded once). On the nccl backend wait() makes the current CUDA stream wait for
  // NCCL's stream (it does not block the host), so the result is ready for work queued after
  // it. Backends without asynchronous collectives (single, mpi) run it at once and return a
  // finished handle.
  virtual std::unique_ptr<Pending> all_gather_async(const at::Tensor& input, at::Tensor& output) {
    all_gather(input, output);
    return done();
  }
  virtual std::unique_ptr<Pending> reduce_scatter_async(const at::Tensor& input, at::Tensor& output) {
    reduce_scatter_sum(input, output);
    return done();
  }

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CommStats{}; }

 protected:
  static std::unique_ptr<Pending> done() {
    struct Done : Pending {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  void count(const std::string& op, uint64_t bytes) {
    stats_.bytes_sent += bytes;
    stats_.bytes_by_op[op] += bytes;
    stats_.calls_by_op[op] += 1;
  }
  CommStats stats_;
};

// A world of one: every collective is the identity and sends nothing.
std::shared_ptr<Comm> make_single_comm();

}  // namespace ftrun::comm
