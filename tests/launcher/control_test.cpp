// The control plane's building blocks (launcher/control.h, worker_link.h): message framing
// over real ZeroMQ sockets, the worker link's hello/heartbeat/progress/error, exit
// descriptions of real child processes, the config fingerprint, free ports.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <zmq.hpp>

#include "launcher/agent.h"
#include "launcher/control.h"
#include "launcher/worker_link.h"

using namespace ftrun::launcher;

namespace {

// Waits up to 5 s for one message.
std::optional<nlohmann::json> recv_wait(zmq::socket_t& s, std::string* id = nullptr) {
  for (int i = 0; i < 500; ++i) {
    if (auto m = recv_json(s, id)) return m;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

int status_of(void (*child)()) {
  pid_t pid = fork();
  if (pid == 0) {
    child();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

}  // namespace

TEST(Control, DealerRouterRoundTripKeepsIdentity) {
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  router.bind("tcp://127.0.0.1:*");
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  send_json(dealer, {{"t", "hello"}, {"node", 1}});
  std::string id;
  auto m = recv_wait(router, &id);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["t"], "hello");
  EXPECT_EQ((*m)["node"], 1);
  EXPECT_FALSE(id.empty());
  send_json_to(router, id, {{"t", "start"}, {"attempt", 2}});
  auto r = recv_wait(dealer);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "start");
  EXPECT_EQ((*r)["attempt"], 2);
}

TEST(Control, GarbageIsMarkedNotThrown) {
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
  pull.bind("tcp://127.0.0.1:*");
  push.connect(pull.get(zmq::sockopt::last_endpoint));
  push.send(zmq::buffer(std::string("not json {")), zmq::send_flags::none);
  push.send(zmq::buffer(std::string("[1,2]")), zmq::send_flags::none);
  for (int k = 0; k < 2; ++k) {
    auto m = recv_wait(pull);
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["t"], "garbage");
  }
  EXPECT_FALSE(recv_json(pull));  // nothing waiting: no block, no message
}

TEST(Control, WorkerLinkSendsHelloHeartbeatsProgressAndError) {
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.bind("tcp://127.0.0.1:*");
  const std::string ep = pull.get(zmq::sockopt::last_endpoint);
  ::setenv(kAgentEndpointEnv, ep.c_str(), 1);
  auto link = WorkerLink::from_env(3);
  ::unsetenv(kAgentEndpointEnv);
  ASSERT_TRUE(link->active());
  link->progress(5, 10);
  std::this_thread::sleep_for(kWorkerHeartbeat * 3);
  link->error("boom at step 5");
  link.reset();
  std::map<std::string, int> seen;
  std::string what;
  while (auto m = recv_wait(pull)) {
    EXPECT_EQ((*m)["rank"], 3);
    seen[(*m)["t"].get<std::string>()]++;
    if ((*m)["t"] == "progress") {
      EXPECT_EQ((*m)["done"], 5);
      EXPECT_EQ((*m)["total"], 10);
    }
    if ((*m)["t"] == "error") {
      what = (*m)["what"];
      break;
    }
  }
  EXPECT_EQ(seen["hello"], 1);
  EXPECT_GE(seen["hb"], 2);
  EXPECT_EQ(seen["progress"], 1);
  EXPECT_EQ(what, "boom at step 5");
}

TEST(Control, WorkerLinkIsInactiveWithoutAnAgent) {
  ::unsetenv(kAgentEndpointEnv);
  auto link = WorkerLink::from_env(0);
  EXPECT_FALSE(link->active());
  link->progress(1, 2);  // no-ops
  link->error("x");
}

TEST(Control, DescribeExitOfRealChildren) {
  EXPECT_EQ(describe_exit(status_of([] { _exit(3); })), "exited with code 3");
  EXPECT_EQ(describe_exit(status_of([] { _exit(0); })), "exited with code 0");
  EXPECT_EQ(describe_exit(status_of([] { raise(SIGKILL); })), "killed by signal 9 (SIGKILL)");
  EXPECT_EQ(describe_exit(status_of([] { raise(SIGTERM); })), "killed by signal 15 (SIGTERM)");
}

TEST(Control, FingerprintSeparatesPartsAndIsStable) {
  // FNV-1a 64 of the empty input is the offset basis 0xcbf29ce484222325 (published constant);
  // with no parts nothing is hashed.
  EXPECT_EQ(fingerprint({}), "cbf29ce484222325");
  EXPECT_EQ(fingerprint({"a: 1", "x=2"}), fingerprint({"a: 1", "x=2"}));
  EXPECT_NE(fingerprint({"ab", "c"}), fingerprint({"a", "bc"}));
  EXPECT_NE(fingerprint({"lr: 1e-4"}), fingerprint({"lr: 1e-5"}));
  EXPECT_EQ(fingerprint({"x"}).size(), 16u);
}

TEST(Control, FreePortCanBeBound) {
  int port = free_tcp_port();
  ASSERT_GT(port, 0);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
}

TEST(Agent, ValidateNamesTheFlag) {
  AgentOptions o;
  o.nnodes = 2;
  o.node_rank = 2;
  o.master_addr = "h";
  try {
    validate(o);
    FAIL() << "accepted --node-rank 2 with --nnodes 2";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--node-rank 2 is out of range for --nnodes 2"), std::string::npos);
  }
  o.node_rank = 1;
  o.master_addr.clear();
  EXPECT_THROW(validate(o), std::invalid_argument);  // --master-addr required across nodes
  o.master_addr = "h";
  EXPECT_NO_THROW(validate(o));
  o.grace_period = o.heartbeat_timeout;
  EXPECT_THROW(validate(o), std::invalid_argument);  // stopping would look like a lost node
  o.grace_period = std::chrono::seconds(1);
  o.nproc_per_node = 0;
  EXPECT_THROW(validate(o), std::invalid_argument);
}
