// testing/: what the tests and the benchmarks share (library ftrun_testing): the process
// launcher, the golden-file reader (golden_files.h) and the tiny-model setup (tiny.h).
// run_in_ranks / run_wrapped, which need GoogleTest, are in ranks.h (library
// ftrun_testing_gtest), so that bench/ links no GoogleTest.
//
// Multi-process launch helper: starts N processes with the torchrun-style environment (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT=<free port>),
// waits for them under a deadline (killing all of them when it passes), and returns each
// one's exit status and captured stdout/stderr. Inside a GoogleTest binary the usual way is
// run_in_ranks() (ranks.h); a plain program (bench/zero_bench) calls launch() itself.
#pragma once
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace ftrun::testing {

struct ChildResult {
  int rank = 0;
  int exit_code = -1;   // exit status, or 128 + signal when killed by a signal
  int term_signal = 0;  // the signal that ended it, 0 if it exited
  bool killed_on_timeout = false;
  std::string out;  // captured stdout
  std::string err;  // captured stderr
  bool body_finished = false;  // run_in_ranks/run_wrapped: the test body returned in this child
};

struct LaunchResult {
  std::vector<ChildResult> children;
  bool timed_out = false;   // the deadline passed and the remaining children were killed
  double seconds = 0;       // wall time until the last child ended
  int master_port = 0;
  bool bodies_expected = false;  // set by run_in_ranks: ok() also needs body_finished
  // No timeout, every child exited 0 (and, from run_in_ranks, every child's body finished).
  bool ok() const;
  // How many test bodies finished across all captured output (run_wrapped: mpirun gathers
  // its ranks' stderr into children[0], so this counts the ranks that got through).
  int bodies_finished() const;
  std::string report() const;  // per child: status and the tail of its stderr/stdout
};

struct LaunchOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
  int master_port = 0;         // 0: pick a free one
  int local_world_size = 0;    // 0: = world size (all "on one node")
  std::map<std::string, std::string> env;  // extra variables for every child
  // Kill the rest as soon as one child exits non-zero (off: tests of failure handling want to
  // see how the others end on their own).
  bool kill_all_on_failure = false;
};

// True in a process started by run_in_ranks / run_wrapped.
bool is_child();

// N children of `exe` with `args`, each with the torchrun-style env of its rank. The
// parent's environment is inherited minus launcher variables (RANK..., OMPI_*, PMI*, SLURM_*)
// so the children see exactly one launch mode; OMP_NUM_THREADS defaults to 1.
LaunchResult launch(int world_size, const std::string& exe, const std::vector<std::string>& args,
                    const LaunchOptions& options = {});

// Runs one command (no torchrun env) with a deadline; children[0] is its result.
LaunchResult run_command(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                         std::chrono::milliseconds timeout);

// A directory the test and its ranks share, for results the ranks write for the parent to
// check: the parent makes it empty under the temp directory (named after `name` and its pid)
// and passes it in FTRUN_TEST_OUT through `options`; in a rank it is read back from there.
std::filesystem::path shared_test_dir(const std::string& name, LaunchOptions& options);

// A TCP port that was free a moment ago on 0.0.0.0, drawn at random below Linux's ephemeral
// range (32768+) so that other programs' automatic port choices do not take it meanwhile.
int free_port();

}  // namespace ftrun::testing
