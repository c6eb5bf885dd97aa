// run_in_ranks / run_wrapped (see ranks.h): the parts of the launch helper that need
// GoogleTest, to name the running test and to read its verdict in a child.
#include "testing/ranks.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <stdexcept>

#include "testing/launch_impl.h"

namespace ftrun::testing {

using namespace detail;

namespace {

std::string current_test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (!info) throw std::logic_error("launch: run_in_ranks/run_wrapped must be called inside a TEST");
  return std::string(info->test_suite_name()) + "." + info->name();
}

bool& body_ran() {
  static bool ran = false;
  return ran;
}

// In a child: run the body once, then exit with gtest's verdict (the rest of the test, which
// inspects the launch results, is the parent's).
[[noreturn]] void run_child_body(const std::function<void()>& body) {
  const char* want = std::getenv("FTRUN_TEST_NAME");
  if (body_ran() || (want && current_test_name() != want)) {
    std::fprintf(stderr, "launch: child reached a second run_in_ranks/run_wrapped (one per TEST)\n");
    std::fflush(nullptr);
    std::_Exit(99);
  }
  body_ran() = true;
  int code = 0;
  try {
    body();
  } catch (const std::exception& e) {
    const char* rank = std::getenv("RANK") ? std::getenv("RANK") : std::getenv("OMPI_COMM_WORLD_RANK");
    std::fprintf(stderr, "child (rank %s): uncaught exception: %s\n", rank ? rank : "?", e.what());
    code = 3;
  } catch (...) {
    std::fprintf(stderr, "child: uncaught non-standard exception\n");
    code = 3;
  }
  if (code == 0 && ::testing::Test::HasFailure()) code = 1;
  std::fflush(stdout);
  std::fprintf(stderr, "%s (exit %d)\n", kBodyMarker, code);
  std::fflush(nullptr);
  std::exit(code);  // exit, not _Exit: MPI's at-exit finalisation must run
}

void claim_once_per_test(const std::string& name) {
  static std::set<std::string> used;
  if (!used.insert(name).second)
    throw std::logic_error("launch: " + name + " calls run_in_ranks/run_wrapped twice; use one per TEST");
}

}  // namespace

LaunchResult run_in_ranks(int world_size, const std::function<void()>& body, const LaunchOptions& options) {
  if (is_child()) run_child_body(body);
  const std::string name = current_test_name();
  claim_once_per_test(name);
  LaunchOptions o = options;
  o.env[kChildVar] = "1";
  o.env["FTRUN_TEST_NAME"] = name;
  LaunchResult r = launch(world_size, self_exe(), {"--gtest_filter=" + name}, o);
  r.bodies_expected = true;
  return r;
}

LaunchResult run_wrapped(const std::vector<std::string>& wrapper, const std::function<void()>& body,
                         const LaunchOptions& options) {
  if (is_child()) run_child_body(body);
  if (wrapper.empty()) throw std::invalid_argument("run_wrapped: empty wrapper command");
  const std::string name = current_test_name();
  claim_once_per_test(name);
  Spec s;
  s.argv = wrapper;
  s.argv.push_back(self_exe());
  s.argv.push_back("--gtest_filter=" + name);
  s.env = clean_environment();
  for (const auto& [k, v] : options.env) s.env[k] = v;
  s.env[kChildVar] = "1";
  s.env["FTRUN_TEST_NAME"] = name;
  return run_all({s}, options);
}

}  // namespace ftrun::testing
