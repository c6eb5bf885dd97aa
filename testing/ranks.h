// run_in_ranks / run_wrapped: a GoogleTest test that runs its body in several processes.
// Library ftrun_testing_gtest (this needs GoogleTest; the plain launcher is launch.h).
//
// The usual way is run_in_ranks(): the current GoogleTest binary re-executes itself (fork +
// exec, so no thread or libtorch state crosses the fork) with --gtest_filter=<this test> and
// FTRUN_TEST_CHILD=1; in the children the same call runs `body` and exits, in the parent it
// launches and returns the results:
//
//   TEST(MyDist, Sums) {
//     auto r = ftrun::testing::run_in_ranks(2, [] {
//       auto comm = ftrun::comm::init_comm(ftrun::comm::detect_rank_info(), "gloo", std::chrono::seconds(20));
//       ...EXPECT_... / ASSERT_...          // failures make the child exit non-zero
//     });
//     EXPECT_TRUE(r.ok()) << r.report();    // never reached in a child
//   }
//
// Rules: one run_in_ranks / run_wrapped per TEST (the children run the first body they meet);
// the body runs inside the child's copy of the test, so gtest assertions work there. Register
// the test with a ctest TIMEOUT larger than LaunchOptions::timeout.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "testing/launch.h"

namespace ftrun::testing {

// Re-executes the current test in `world_size` children (see above).
LaunchResult run_in_ranks(int world_size, const std::function<void()>& body, const LaunchOptions& options = {});

// Runs the current test as the target of a wrapper command, e.g. {"mpirun", "-np", "2", ...}:
// the wrapper is started once (with the parent's environment minus launcher variables, plus
// FTRUN_TEST_CHILD=1 and options.env) and is given "<this binary> --gtest_filter=<this test>".
// Its result is children[0] (rank 0). In the processes it starts, `body` runs.
LaunchResult run_wrapped(const std::vector<std::string>& wrapper, const std::function<void()>& body,
                         const LaunchOptions& options = {});

}  // namespace ftrun::testing
