// Private to comm/: what the backends share (byte formulas, argument checks, error
// wording) and the factories rendezvous.cpp calls. Not for other parts: they see only
// rendezvous.h, rank_info.h and comm.h.
#pragma once
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "comm/rank_info.h"
#include "comm/comm.h"

namespace c10d {
class Store;
}

namespace ftrun::comm::detail {

using Ms = std::chrono::milliseconds;

// The ring volumes of comm/comm.h, per rank, for S bytes and n ranks.
inline uint64_t all_reduce_bytes(uint64_t s, int n) { return n <= 1 ? 0 : s * 2 * uint64_t(n - 1) / uint64_t(n); }
inline uint64_t share_bytes(uint64_t s, int n) { return n <= 1 ? 0 : s * uint64_t(n - 1) / uint64_t(n); }
inline uint64_t nbytes(const at::Tensor& t) { return uint64_t(t.numel()) * uint64_t(t.element_size()); }

// "float tensor of 1024 elements"
std::string tensor_desc(const at::Tensor& t);
// "3 s", "250 ms"
std::string duration_desc(Ms d);

// Shared argument checks; they throw std::invalid_argument naming the backend and operation.
void check_dense(const std::string& backend, const std::string& op, const at::Tensor& t);
void check_reduce_scatter(const std::string& backend, const at::Tensor& input, const at::Tensor& output, int n);
void check_all_gather(const std::string& backend, const at::Tensor& input, const at::Tensor& output, int n);
void check_root(const std::string& backend, int root, int n);

// The message of a caught exception without libtorch's C++ backtrace.
std::string short_what(const std::exception& e);

// --- notices while waiting (issue 16) ---
// A rendezvous or collective that has waited `first` (30 s) prints a line on stderr saying what
// it waits for (which ranks, which endpoint or collective), then once every `every` (60 s)
// until it completes or times out. FTRUN_WAIT_NOTICE="FIRST[,EVERY]" (seconds, decimals
// allowed) overrides both, so tests see the notices in a second.
struct NoticeTimes {
  Ms first{30000};
  Ms every{60000};
};
NoticeTimes notice_times();
// For polling loops: due(elapsed) is true when a notice is owed now.
class NoticeClock {
 public:
  NoticeClock() : t_(notice_times()), next_(t_.first) {}
  bool due(Ms elapsed) {
    if (elapsed < next_) return false;
    next_ = elapsed + t_.every;
    return true;
  }
  const NoticeTimes& times() const { return t_; }

 private:
  NoticeTimes t_;
  Ms next_;
};
// How long something has waited: "45 s"; below 10 s with a decimal ("0.4 s").
std::string waited_desc(Ms d);
// "ftrun: <line>" on stderr, flushed.
void print_notice(const std::string& line);
// For a blocking call: while alive, a thread prints describe(elapsed) on NoticeClock's
// schedule. describe runs on that thread and must not throw.
class WaitWatch {
 public:
  explicit WaitWatch(std::function<std::string(Ms elapsed)> describe);
  ~WaitWatch();
  WaitWatch(const WaitWatch&) = delete;
  WaitWatch& operator=(const WaitWatch&) = delete;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

std::shared_ptr<Comm> make_gloo_comm(const RankInfo& info, Ms rendezvous_timeout, Ms collective_timeout);
std::shared_ptr<Comm> make_mpi_comm(const RankInfo& info, Ms collective_timeout);
#ifdef FTRUN_WITH_NCCL
std::shared_ptr<Comm> make_nccl_comm(const RankInfo& info, Ms rendezvous_timeout, Ms collective_timeout);
#endif

// --- rendezvous (gloo_comm.cpp) ---
// Rank 0 serves a c10d TCPStore, the others connect to it; every rank checks in and rank 0
// waits for all of them, so a missing rank is an error naming the endpoint. Under mpirun
// without MASTER_ADDR/MASTER_PORT, the endpoint is agreed over MPI first.
c10::intrusive_ptr<c10d::Store> connect_store(const RankInfo& info, Ms timeout);

// --- MPI helpers (mpi_comm.cpp) ---
// Initialises MPI once per process (MPI_THREAD_SERIALIZED: only the calling thread uses it).
// Throws if MPI was finalised already (gloo-under-mpirun finalises right after rendezvous).
void mpi_init_once();
// Ends MPI after the endpoint exchange so that later exits (clean or not) are never held up in
// MPI_Finalize and mpirun sees every rank finalise.
void mpi_finalize_now();

struct Endpoint {
  std::string addr;
  int port = 0;
};
// Rank 0 sends `mine` (or `error`, which makes every other rank throw it) to all ranks of
// MPI_COMM_WORLD; every rank returns rank 0's endpoint. Bounded by `timeout`.
Endpoint mpi_broadcast_endpoint(const RankInfo& info, const Endpoint* mine, const std::string* error, Ms timeout);

// Rank 0's rendezvous endpoint as agreed over MPI. Rank 0 runs `serve`, which opens its
// TCPStore and returns the bound port; if it throws, the error is sent to the others too, so
// no rank waits for an endpoint that will never come.
template <class F>
Endpoint mpi_agree_endpoint(const RankInfo& info, const std::string& addr0, Ms timeout, F&& serve) {
  if (info.rank != 0) return mpi_broadcast_endpoint(info, nullptr, nullptr, timeout);
  Endpoint mine{addr0, 0};
  try {
    mine.port = serve();
  } catch (const std::exception& e) {
    const std::string msg = short_what(e);
    mpi_broadcast_endpoint(info, nullptr, &msg, timeout);
    throw;
  }
  return mpi_broadcast_endpoint(info, &mine, nullptr, timeout);
}

// This host's address as other nodes should dial it: the first non-loopback IPv4 address of
// its hostname, else of any interface that is up; "127.0.0.1" when there is none.
std::string primary_address();
// The local address this host uses to reach `peer` (the kernel's route choice, found by
// connecting a UDP socket, which sends nothing); primary_address() when that fails. With
// several interfaces (or network namespaces) it is the one the other nodes can dial back.
std::string address_toward(const std::string& peer);
bool is_loopback(const std::string& host);

}  // namespace ftrun::comm::detail
