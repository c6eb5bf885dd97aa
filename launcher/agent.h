// The per-node agent of `ftrun --nproc-per-node K [--nnodes N --node-rank R --master-addr H]`:
// what torchrun's elastic agent does, for ftrun. Each node's agent spawns K workers (this same
// executable, with the torchrun environment), prefixes their output with their rank, watches
// them over the ZeroMQ control plane (control.h), and with the other nodes' agents:
//  - rendezvous: every agent says hello to node 0's agent (the coordinator), which checks the
//    node ranks, the node count, --nproc-per-node and the config fingerprint, then starts all;
//  - any worker dying, hanging (no heartbeat for --heartbeat-timeout; with --progress-timeout,
//    also no completed training step for that long once the first step is done) or reporting an error,
//    or any agent going silent, stops every worker on every node (SIGTERM, SIGKILL after
//    --grace-period) and ends the job non-zero with the first failure's description as the
//    last line on every node;
//  - with --max-restarts K the workers are started again (up to K times), resuming from the
//    newest complete checkpoint (`--resume yes` is added when the user gave none).
// A lost agent is not restarted around (as torchrun, node loss is the scheduler's business).
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace ftrun::launcher {

struct AgentOptions {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr;  // required when nnodes > 1; 127.0.0.1 otherwise
  int master_port = 0;      // the agents' rendezvous port (0: 29400 across nodes, any free one on one node)
  int max_restarts = 0;
  std::chrono::milliseconds rendezvous_timeout{std::chrono::seconds(300)};
  std::chrono::milliseconds heartbeat_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds grace_period{std::chrono::seconds(5)};
  // 0: off. Heartbeats come from a thread and only prove a rank is alive; this catches ranks
  // that are alive but stuck (in a collective, a deadlock, a loop): no optimizer step finished
  // for this long after the last one. It must exceed the longest step, evaluation or save.
  std::chrono::milliseconds progress_timeout{0};
  std::string config_fingerprint;  // compared across nodes at rendezvous
  std::string config_path;         // for messages
};

constexpr int kDefaultAgentPort = 29400;  // torchrun's c10d rendezvous port

// Throws std::invalid_argument for options that cannot work (naming the flag).
void validate(const AgentOptions& options);

// Runs the job on this node: worker_args are the arguments each worker gets after the
// executable (the training command without agent flags). Returns the exit code for the
// agent process (0 when every worker on every node finished).
int run_agent(const AgentOptions& options, const std::vector<std::string>& worker_args);

}  // namespace ftrun::launcher
