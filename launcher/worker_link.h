// The worker's end of the control plane: when ftrun runs as a worker of `ftrun
// --nproc-per-node` (FTRUN_AGENT_ENDPOINT set), it says hello to its agent, heartbeats from a
// background thread, reports progress after each step and the error it exits with.
// Outside an agent every call is a no-op.
#pragma once
#include <memory>
#include <string>

namespace ftrun::launcher {

class WorkerLink {
 public:
  // Connects when the environment names an agent; otherwise an inactive link.
  static std::unique_ptr<WorkerLink> from_env(int rank);
  ~WorkerLink();
  bool active() const;
  void progress(int64_t done, int64_t total);
  // Sends the error and waits (briefly) until it has left the process.
  void error(const std::string& what);

 private:
  WorkerLink();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ftrun::launcher
