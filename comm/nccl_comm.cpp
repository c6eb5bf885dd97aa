// The nccl backend: c10d ProcessGroupNCCL over the same TCPStore rendezvous as gloo. Compiled
// only when the libtorch has CUDA (FTRUN_WITH_NCCL, set by comm/CMakeLists.txt), i.e. with a
// CUDA libtorch 2.x; compiled in .ci/build-cuda but never run with more than one rank (the
// development machines have no GPU, the GPU check has one). Timeouts are enforced by
// ProcessGroupNCCL's watchdog (it tears the process down after `timeout`).
//
// Native collectives: fp32 (and other non-bf16) reduce-scatter is NCCL's _reduce_scatter_base,
// all-gather its flat _allgather_base, all-reduce its allreduce. bf16 sums keep ftrun's
// contract (comm.h, gloo_comm.cpp): formed in fp32 from the bf16 values and rounded once,
// whereas NCCL would round after every addition of its ring. So a bf16 reduce-scatter is
// NCCL's alltoall_base (the same (n-1)/n of the input on the wire as a ring reduce-scatter)
// plus a local fp32 sum over the received rows, and a bf16 all-reduce is that
// reduce-scatter followed by an all-gather, as on gloo: the same config gives the same bf16
// gradients on either backend. An output that aliases the input is handled by cloning the
// input first (NCCL's in-place layouts are narrower than ftrun's).
//
// Streams: every collective runs on NCCL's own stream. Work::wait() does not block the host:
// it makes the CURRENT CUDA stream wait for NCCL's, so kernels queued after wait() see the
// result. all_gather_async / reduce_scatter_async return that Work (wrapped), so a ZeRO-3
// prefetch all-gather or a finished unit's reduce-scatter runs on NCCL's stream while the
// current unit computes on the compute stream; the synchronous forms start and wait at once.
//
// CPU tensors: NCCL only moves device memory, but the trainer all-reduces small CPU tensors
// (token counts, the loss sum, the grad-norm square sum) and broadcasts small host values.
// Such a tensor is staged through the current CUDA device: copied there, the collective run,
// the result copied back (the copy back waits for the collective, so the call returns with the
// host tensor filled in). The asynchronous forms run staged collectives synchronously and
// return a finished handle. GPU tensors go straight through.
#ifdef FTRUN_WITH_NCCL
#define USE_C10D_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <functional>
#include <stdexcept>

#include "comm/comm_impl.h"

namespace ftrun::comm::detail {
namespace {

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

class NcclComm : public Comm {
 public:
  NcclComm(c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg, int rank, int world)
      : pg_(std::move(pg)), rank_(rank), n_(world) {}
  int rank() const override { return rank_; }
  int world_size() const override { return n_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(at::Tensor& t) override {
    check_dense("nccl", "all_reduce", t);
    if (t.numel() > 0) {
      at::Tensor d = staged(t);
      if (is_bf16(d)) {
        // Padded to n equal shards: reduce-scatter (fp32 sum), then all-gather the shards.
        const int64_t m = d.numel(), padded = (m + n_ - 1) / n_ * n_;
        auto full = at::zeros({padded}, d.options());
        full.narrow(0, 0, m).copy_(d.view({-1}));
        auto shard = at::empty({padded / n_}, d.options());
        finish(start_reduce_scatter(full, shard));
        finish(start_all_gather(shard, full));
        d.view({-1}).copy_(full.narrow(0, 0, m));
      } else {
        std::vector<at::Tensor> v{d};
        finish({"all_reduce", d, pg_->allreduce(v), {}});
      }
      if (!d.is_same(t)) t.copy_(d);
    }
    count("all_reduce", all_reduce_bytes(nbytes(t), n_));
  }
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    reduce_scatter_async(input, output)->wait();
  }
  std::unique_ptr<Pending> reduce_scatter_async(const at::Tensor& input, at::Tensor& output) override {
    check_reduce_scatter("nccl", input, output, n_);
    count("reduce_scatter", share_bytes(nbytes(input), n_));
    return launch(&NcclComm::start_reduce_scatter, input, output);
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    all_gather_async(input, output)->wait();
  }
  std::unique_ptr<Pending> all_gather_async(const at::Tensor& input, at::Tensor& output) override {
    check_all_gather("nccl", input, output, n_);
    count("all_gather", share_bytes(nbytes(output), n_));
    return launch(&NcclComm::start_all_gather, input, output);
  }
  void broadcast(at::Tensor& t, int root) override {
    check_dense("nccl", "broadcast", t);
    check_root("nccl", root, n_);
    if (t.numel() > 0) {
      at::Tensor d = staged(t);
      std::vector<at::Tensor> v{d};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      finish({"broadcast", d, pg_->broadcast(v, o), {}});
      if (!d.is_same(t)) t.copy_(d);
    }
    count("broadcast", rank_ == root ? nbytes(t) : 0);
  }
  void barrier() override {
    run("barrier", [&] { return pg_->barrier(); });
  }

 private:
  // A started collective: its Work, the tensors it uses (kept alive until it completes), and
  // what to do on the compute stream once it has (the bf16 local sum).
  struct Started {
    const char* op;
    at::Tensor keep;
    c10::intrusive_ptr<c10d::Work> work;
    std::function<void()> then;
    std::vector<at::Tensor> more;
  };

  // A reduce-scatter or all-gather: on GPU tensors started and returned in flight; host
  // tensors are staged through the device and completed at once (a finished handle).
  using Start = Started (NcclComm::*)(const at::Tensor&, at::Tensor&);
  std::unique_ptr<Pending> launch(Start start, const at::Tensor& input, at::Tensor& output) {
    if (input.numel() == 0) return done();
    if (input.is_cuda() && output.is_cuda()) return pending((this->*start)(input, output));
    at::Tensor d_in = staged(input), d_out = staged(output);
    finish((this->*start)(d_in, d_out));
    output.copy_(d_out);
    return done();
  }

  // The device copy of t: t itself when it is on a GPU, else a copy on the current device.
  static at::Tensor staged(const at::Tensor& t) {
    if (t.is_cuda()) return t;
    return t.to(at::Device(at::kCUDA, c10::cuda::current_device()));
  }

  Started start_reduce_scatter(const at::Tensor& input, at::Tensor& output) {
    if (is_bf16(input)) {
      // Row j of recv = rank j's copy of this rank's shard; summed in fp32 after the wait.
      at::Tensor in = input.reshape({-1});
      at::Tensor recv = at::empty_like(in);
      std::vector<int64_t> equal_split;
      auto work = pg_->alltoall_base(recv, in, equal_split, equal_split);
      const int n = n_;
      at::Tensor out = output;
      return {"reduce_scatter", input, work,
              [recv, out, n]() mutable { out.view({-1}).copy_(recv.view({n, -1}).sum(0, false, at::kFloat)); },
              {in, recv, output}};
    }
    at::Tensor in = input.is_alias_of(output) ? input.clone() : input;
    at::Tensor out = output;
    return {"reduce_scatter", input, pg_->_reduce_scatter_base(out, in), {}, {in, output}};
  }
  Started start_all_gather(const at::Tensor& input, at::Tensor& output) {
    at::Tensor in = input.is_alias_of(output) ? input.clone() : input;
    at::Tensor out = output;
    return {"all_gather", input, pg_->_allgather_base(out, in), {}, {in, output}};
  }

  void finish(Started s) {
    auto w = std::move(s.work);
    run(s.op, [&] { return w; });
    if (s.then) s.then();
  }
  std::unique_ptr<Pending> pending(Started s) {
    struct Work : Pending {
      NcclComm* comm;
      Started s;
      bool done = false;
      void wait() override {
        if (done) return;
        done = true;
        comm->finish(std::move(s));
      }
    };
    auto p = std::make_unique<Work>();
    p->comm = this;
    p->s = std::move(s);
    return p;
  }

  template <class F>
  void run(const char* op, F&& start) {
    try {
      start()->wait();  // orders the current CUDA stream after the collective
    } catch (const std::exception& e) {
      throw std::runtime_error("nccl " + std::string(op) + " failed on rank " + std::to_string(rank_) + " of " +
                               std::to_string(n_) + ": " + short_what(e));
    }
  }
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
  int rank_, n_;
};

}  // namespace

std::shared_ptr<Comm> make_nccl_comm(const RankInfo& info, Ms rendezvous_timeout, Ms collective_timeout) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(info.local_rank));
  auto store = connect_store(info, rendezvous_timeout);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = collective_timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, info.rank, info.world_size, opts);
  return std::make_shared<NcclComm>(std::move(pg), info.rank, info.world_size);
}

}  // namespace ftrun::comm::detail
#endif  // FTRUN_WITH_NCCL
