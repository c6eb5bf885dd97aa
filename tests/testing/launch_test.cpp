// The launch helper itself: children get the torchrun-style environment, a failing child is
// reported with its output, a hung child is killed at the deadline, and run_command captures
// exit status and both streams. Other multi-rank tests rely on all of that.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "testing/ranks.h"

using namespace std::chrono_literals;
using ftrun::testing::LaunchOptions;
using ftrun::testing::run_in_ranks;

namespace {
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "<unset>";
}
}  // namespace

TEST(LaunchHelper, ChildrenGetTheTorchrunEnvironment) {
  LaunchOptions o;
  o.timeout = 60s;
  o.local_world_size = 2;
  o.env["FTRUN_LAUNCH_TEST_EXTRA"] = "yes";
  auto r = run_in_ranks(4, [] {
    const int rank = std::stoi(env("RANK"));
    EXPECT_EQ(env("WORLD_SIZE"), "4");
    EXPECT_EQ(env("LOCAL_RANK"), std::to_string(rank % 2));
    EXPECT_EQ(env("LOCAL_WORLD_SIZE"), "2");
    EXPECT_EQ(env("GROUP_RANK"), std::to_string(rank / 2));
    EXPECT_EQ(env("MASTER_ADDR"), "127.0.0.1");
    EXPECT_GT(std::stoi(env("MASTER_PORT")), 0);
    EXPECT_EQ(env("OMP_NUM_THREADS"), "1");
    EXPECT_EQ(env("FTRUN_LAUNCH_TEST_EXTRA"), "yes");
    std::fprintf(stderr, "hello from rank %d\n", rank);
  }, o);
  ASSERT_TRUE(r.ok()) << r.report();
  ASSERT_EQ(r.children.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NE(r.children[i].err.find("hello from rank " + std::to_string(i)), std::string::npos) << r.report();
    EXPECT_TRUE(r.children[i].body_finished);
  }
  EXPECT_EQ(r.bodies_finished(), 4);
}

TEST(LaunchHelper, AFailingChildIsReportedWithItsOutput) {
  auto r = run_in_ranks(2, [] {
    EXPECT_EQ(env("RANK"), "0") << "deliberate failure in rank " << env("RANK");
  }, LaunchOptions{});
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.children.size(), 2u);
  EXPECT_EQ(r.children[0].exit_code, 0) << r.report();
  EXPECT_EQ(r.children[1].exit_code, 1) << r.report();
  EXPECT_NE(r.children[1].out.find("deliberate failure in rank 1"), std::string::npos) << r.report();
  EXPECT_NE(r.report().find("deliberate failure in rank 1"), std::string::npos);
}

TEST(LaunchHelper, HungChildrenAreKilledAtTheDeadline) {
  LaunchOptions o;
  o.timeout = 8s;
  auto r = run_in_ranks(2, [] {
    if (env("RANK") == "1") std::this_thread::sleep_for(120s);
  }, o);
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_GT(r.seconds, 7.9);
  EXPECT_LT(r.seconds, 8 + 10.0);
  ASSERT_EQ(r.children.size(), 2u);
  // Rank 0 normally finished long before the deadline; on a very loaded machine it may not
  // have started its body yet and was killed too. Either way it was not left running.
  if (!r.children[0].killed_on_timeout) {
    EXPECT_EQ(r.children[0].exit_code, 0) << r.report();
  }
  EXPECT_TRUE(r.children[1].killed_on_timeout) << r.report();
  EXPECT_EQ(r.children[1].term_signal, SIGTERM) << r.report();
  EXPECT_NE(r.report().find("TIMED OUT"), std::string::npos);
}

TEST(LaunchHelper, KillAllOnFailureStopsTheOthersAtOnce) {
  LaunchOptions o;
  o.timeout = 60s;
  o.kill_all_on_failure = true;
  auto r = run_in_ranks(2, [] {
    if (env("RANK") == "1") throw std::runtime_error("rank 1 fails");
    std::this_thread::sleep_for(120s);
  }, o);
  EXPECT_FALSE(r.timed_out);
  EXPECT_LT(r.seconds, 30.0) << r.report();
  EXPECT_EQ(r.children.at(1).exit_code, 3) << r.report();
  EXPECT_NE(r.children.at(1).err.find("rank 1 fails"), std::string::npos) << r.report();
  EXPECT_EQ(r.children.at(0).term_signal, SIGTERM) << r.report();
}

TEST(LaunchHelper, RunCommandCapturesStatusAndStreams) {
  auto r = ftrun::testing::run_command({"sh", "-c", "echo out-$X; echo err >&2; exit 3"}, {{"X", "42"}}, 30s);
  ASSERT_EQ(r.children.size(), 1u);
  EXPECT_EQ(r.children[0].exit_code, 3);
  EXPECT_EQ(r.children[0].out, "out-42\n");
  EXPECT_EQ(r.children[0].err, "err\n");
  EXPECT_FALSE(r.timed_out);
}

TEST(LaunchHelper, FreePortIsBindable) {
  const int p = ftrun::testing::free_port();
  EXPECT_GE(p, 20000);
  EXPECT_LE(p, 32000);
}
