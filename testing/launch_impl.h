// Private to testing/: what launch.cpp (process launch, no GoogleTest) and ranks.cpp
// (run_in_ranks / run_wrapped, which need GoogleTest) share. Not for tests or benchmarks.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "testing/launch.h"

namespace ftrun::testing::detail {

// Set to "1" in every process a test starts through run_in_ranks / run_wrapped.
constexpr const char* kChildVar = "FTRUN_TEST_CHILD";
// Printed to stderr by a child whose body returned (pass or fail), so that a child which ran
// no test at all (a --gtest_filter that matched nothing exits 0) cannot pass for a good one.
constexpr const char* kBodyMarker = "[ftrun-test-child] body finished";

// One process to start: its command line and its whole environment.
struct Spec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
};

// This process's environment minus launcher variables (RANK..., OMPI_*, PMI*, SLURM_*),
// OMP_NUM_THREADS defaulting to 1.
std::map<std::string, std::string> clean_environment();
// The path of the running executable.
std::string self_exe();
// Starts every spec, waits under the deadline, collects the results.
LaunchResult run_all(const std::vector<Spec>& specs, const LaunchOptions& opt);

}  // namespace ftrun::testing::detail
