// Who this process is in a distributed run, worked out from the launcher's environment:
// nothing (single process), torchrun-style variables, OpenMPI's mpirun or Slurm's srun.
// No torch here: the launcher and the tests parse environments without loading libtorch.
//
// Precedence when several launchers' variables are present (docs/distributed.md):
//   1. torchrun-style (RANK or WORLD_SIZE set): what ftrun's own agent and torchrun export, and
//      what a user sets by hand, so it overrides whatever launched the outer process;
//   2. OpenMPI (OMPI_COMM_WORLD_RANK or OMPI_COMM_WORLD_SIZE set);
//   3. Slurm (SLURM_PROCID set inside an srun step, i.e. with SLURM_STEP_ID / SLURM_STEPID);
//   4. single process.
// A launcher's variables that are partial or contradict each other are an error naming the
// variable, never a silent fallback to another mode.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace ftrun::comm {

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  // Rank 0's rendezvous endpoint (its TCPStore). Under OpenMPI both may be unknown here
  // (empty / 0): init_comm then has rank 0 choose them and broadcasts them over MPI.
  std::string master_addr;
  int master_port = 0;
  std::string launcher = "single";  // "single", "torchrun", "mpi", "slurm"
};

// Port used when neither MASTER_PORT nor a Slurm job id gives one (torchrun's default).
constexpr int kDefaultMasterPort = 29500;

// Throws std::runtime_error naming the missing or bad variable.
RankInfo detect_rank_info(const std::map<std::string, std::string>& env);
// Reads the process environment.
RankInfo detect_rank_info();

// The process environment as a map (for detect_rank_info and for tests).
std::map<std::string, std::string> environment_map();

// Expands a Slurm hostlist ("node[01-03,07],gpu5" -> node01 node02 node03 node07 gpu5):
// comma-separated items, each with any number of [...] groups of comma-separated numbers
// or a-b ranges (zero padding kept from the range's first bound); several groups in one name
// multiply out. Throws std::runtime_error on malformed input (unbalanced brackets, b < a, ...).
std::vector<std::string> expand_slurm_hostlist(const std::string& hostlist);

// Expands SLURM_TASKS_PER_NODE ("2(x3),1" -> 2 2 2 1).
std::vector<int> expand_slurm_tasks_per_node(const std::string& spec);

// One line for logs: "rank 1/4 (local 1/2, node 0) via torchrun, master 10.0.0.1:29500".
std::string describe(const RankInfo& info);

}  // namespace ftrun::comm
