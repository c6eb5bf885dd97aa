// Turning a RankInfo into a working Comm: rendezvous with the other ranks (c10d
// TCPStore served by rank 0; under mpirun rank 0's address and port are sent over MPI) and
// the process group of the chosen backend. No torch or MPI headers here. It sits in comm/,
// beside the backends, because it is what creates them (see comm.h).
//
// Backends: "gloo" (c10d ProcessGroupGloo, CPU), "mpi" (OpenMPI collectives; the processes
// must be started by mpirun), "nccl" (c10d ProcessGroupNCCL; only in CUDA builds), "auto"
// (nccl when built with it and a GPU is present, else gloo; never mpi, which is opt-in).
// A world of one gets make_single_comm() whatever the backend.
//
// Timeouts: the rendezvous (reaching rank 0's store, every rank joining) and every collective
// fail with an error after the timeout instead of hanging; a collective's error names the
// operation, rank and tensor. After such an error the Comm is unusable: exit the process.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "comm/rank_info.h"
#include "comm/comm.h"

namespace ftrun::comm {

constexpr std::chrono::milliseconds kDefaultCommTimeout = std::chrono::minutes(10);

struct CommOptions {
  std::string backend = "auto";
  std::chrono::milliseconds rendezvous_timeout = kDefaultCommTimeout;
  std::chrono::milliseconds collective_timeout = kDefaultCommTimeout;
};

// Same timeout for rendezvous and collectives.
std::shared_ptr<Comm> init_comm(const RankInfo& info, const std::string& backend = "auto",
                                          std::chrono::milliseconds timeout = kDefaultCommTimeout);
std::shared_ptr<Comm> init_comm(const RankInfo& info, const CommOptions& options);

// The backend init_comm would use ("gloo", "mpi", "nccl"; "single" for a world of one).
// Throws std::invalid_argument for an unknown name, "nccl" in a build without CUDA, or "mpi"
// in a process not started by mpirun.
std::string resolve_backend(const RankInfo& info, const std::string& backend);

// Whether this build has the nccl backend compiled in.
bool nccl_compiled();

}  // namespace ftrun::comm
