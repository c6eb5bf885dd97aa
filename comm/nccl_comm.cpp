// The nccl backend: c10d ProcessGroupNCCL over the same TCPStore rendezvous as gloo. Compiled
// only when the libtorch has CUDA (FTRUN_WITH_NCCL, set by comm/CMakeLists.txt), i.e. with a
// CUDA libtorch 2.x; UNTESTED, since the development machines have neither GPU nor such a build.
// NCCL has native reduce-scatter and flat all-gather, so no emulation is needed. Timeouts are
// enforced by ProcessGroupNCCL's watchdog (it tears the process down after `timeout`).
#ifdef FTRUN_WITH_NCCL
#define USE_C10D_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <stdexcept>

#include "comm/comm_impl.h"

namespace ftrun::comm::detail {
namespace {

class NcclComm : public Comm {
 public:
  NcclComm(c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg, int rank, int world)
      : pg_(std::move(pg)), rank_(rank), n_(world) {}
  int rank() const override { return rank_; }
  int world_size() const override { return n_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(at::Tensor& t) override {
    check_dense("nccl", "all_reduce", t);
    std::vector<at::Tensor> v{t};
    run("all_reduce", [&] { return pg_->allreduce(v); });
    count("all_reduce", all_reduce_bytes(nbytes(t), n_));
  }
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    check_reduce_scatter("nccl", input, output, n_);
    at::Tensor in = input.is_alias_of(output) ? input.clone() : input;
    run("reduce_scatter", [&] { return pg_->_reduce_scatter_base(output, in); });
    count("reduce_scatter", share_bytes(nbytes(input), n_));
  }
  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    check_all_gather("nccl", input, output, n_);
    at::Tensor in = input.is_alias_of(output) ? input.clone() : input;
    run("all_gather", [&] { return pg_->_allgather_base(output, in); });
    count("all_gather", share_bytes(nbytes(output), n_));
  }
  void broadcast(at::Tensor& t, int root) override {
    check_dense("nccl", "broadcast", t);
    check_root("nccl", root, n_);
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    run("broadcast", [&] { return pg_->broadcast(v, o); });
    count("broadcast", rank_ == root ? nbytes(t) : 0);
  }
  void barrier() override {
    run("barrier", [&] { return pg_->barrier(); });
  }

 private:
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
