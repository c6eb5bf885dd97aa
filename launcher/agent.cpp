// The per-node agent and, on node 0, the coordinator of all agents (see agent.h, control.h).
// One thread, one poll loop: ZeroMQ sockets, the workers' output pipes and waitpid().
#include "launcher/agent.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <zmq.hpp>

#include "launcher/control.h"

extern char** environ;

namespace ftrun::launcher {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

volatile std::sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

double seconds(std::chrono::milliseconds d) { return double(d.count()) / 1000.0; }
std::string secs_text(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", seconds(d));
  return buf;
}

// ---------------------------------------------------------------------------------------
// Local workers: spawn, output with rank prefixes, reaping, stopping.

struct Worker {
  int rank = 0, local_rank = 0;
  pid_t pid = -1;
  int fds[2] = {-1, -1};      // stdout, stderr pipes (read ends)
  std::string partial[2];     // an unfinished line per stream
  bool running = false, said_hello = false, reported = false;
  Clock::time_point last_heard;
  int64_t steps_done = -1, steps_total = 0;  // the last progress report (-1: none yet)
  Clock::time_point last_step;
  std::string error;          // what the worker reported before exiting
};

class LocalWorkers {
 public:
  LocalWorkers(const AgentOptions& o, std::vector<std::string> args) : o_(o), args_(std::move(args)) {
    tty_ = isatty(STDOUT_FILENO);
  }

  void start(int attempt, const std::string& master_addr, int worker_port, const std::string& endpoint) {
    workers_.assign(size_t(o_.nproc_per_node), Worker{});
    failed_ = false;
    std::vector<std::string> args = args_;
    // A restart continues from the newest complete checkpoint unless the user chose one.
    if (attempt > 0 && std::find(args.begin(), args.end(), "--resume") == args.end()) {
      args.push_back("--resume");
      args.push_back("yes");
    }
    const int world = o_.nnodes * o_.nproc_per_node;
    std::string started;
    for (int l = 0; l < o_.nproc_per_node; ++l) {
      Worker& w = workers_[size_t(l)];
      w.local_rank = l;
      w.rank = o_.node_rank * o_.nproc_per_node + l;
      std::map<std::string, std::string> env;
      for (char** e = environ; *e; ++e) {
        std::string kv(*e);
        auto eq = kv.find('=');
        if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      // torchrun's contract (shared/reference/distributed.md section 5), so the same worker
      // also runs under torchrun, plus the agent's endpoint.
      env["RANK"] = std::to_string(w.rank);
      env["LOCAL_RANK"] = std::to_string(l);
      env["WORLD_SIZE"] = std::to_string(world);
      env["LOCAL_WORLD_SIZE"] = std::to_string(o_.nproc_per_node);
      env["GROUP_RANK"] = env["ROLE_RANK"] = std::to_string(o_.node_rank);
      env["ROLE_WORLD_SIZE"] = std::to_string(world);
      env["MASTER_ADDR"] = master_addr;
      env["MASTER_PORT"] = std::to_string(worker_port);
      env["TORCHELASTIC_RESTART_COUNT"] = env[kRestartCountEnv] = std::to_string(attempt);
      env["TORCHELASTIC_MAX_RESTARTS"] = std::to_string(o_.max_restarts);
      env["TORCHELASTIC_RUN_ID"] = o_.config_fingerprint;
      env[kAgentEndpointEnv] = endpoint;
      // As torchrun: several ranks per node must not each start a thread per core.
      if (!env.count("OMP_NUM_THREADS") && o_.nproc_per_node > 1) env["OMP_NUM_THREADS"] = "1";
      std::vector<std::string> env_strings, argv_strings = {"/proc/self/exe"};
      for (const auto& kv : env) env_strings.push_back(kv.first + "=" + kv.second);
      argv_strings.insert(argv_strings.end(), args.begin(), args.end());
      std::vector<char*> envp, argv;
      for (auto& s : env_strings) envp.push_back(s.data());
      for (auto& s : argv_strings) argv.push_back(s.data());
      envp.push_back(nullptr);
      argv.push_back(nullptr);

      int out[2], err[2];
      if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
        throw std::runtime_error(std::string("pipe(): ") + std::strerror(errno));
      const pid_t parent = getpid();
      pid_t pid = fork();
      if (pid < 0) throw std::runtime_error(std::string("fork(): ") + std::strerror(errno));
      if (pid == 0) {
        // Only async-signal-safe calls from here to exec (the agent has ZeroMQ's threads).
        setpgid(0, 0);  // the agent forwards signals itself, once
        prctl(PR_SET_PDEATHSIG, SIGKILL);  // a dead agent takes its workers along
        if (getppid() != parent) _exit(127);
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        execve(argv[0], argv.data(), envp.data());
        _exit(127);
      }
      close(out[1]);
      close(err[1]);
      w.fds[0] = out[0];
      w.fds[1] = err[0];
      fcntl(out[0], F_SETFL, O_NONBLOCK);
      fcntl(err[0], F_SETFL, O_NONBLOCK);
      w.pid = pid;
      w.running = true;
      w.last_heard = Clock::now();
      started += std::string(started.empty() ? "" : ", ") + "rank " + std::to_string(w.rank) + " (pid " +
                 std::to_string(pid) + ")";
    }
    std::cerr << "ftrun agent: node " << o_.node_rank << ": started " << started << ", attempt " << attempt
              << std::endl;
  }

  std::vector<Worker>& workers() { return workers_; }
  bool any_running() const {
    return std::any_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.running; });
  }
  bool all_exited_ok() const { return !workers_.empty() && all_ok_; }

  // Poll entries for the open output pipes.
  void add_poll_items(std::vector<zmq::pollitem_t>& items) const {
    for (const auto& w : workers_)
      for (int fd : w.fds)
        if (fd >= 0) items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
  }

  void pump_output() {
    for (auto& w : workers_)
      for (int s = 0; s < 2; ++s) read_pipe(w, s);
  }

  // Reaps exited workers; returns those that ended, with their wait status.
  std::vector<std::pair<Worker*, int>> reap() {
    std::vector<std::pair<Worker*, int>> ended;
    for (auto& w : workers_) {
      if (!w.running) continue;
      int status = 0;
      if (waitpid(w.pid, &status, WNOHANG) == w.pid) {
        w.running = false;
        read_pipe(w, 0);
        read_pipe(w, 1);
        ended.push_back({&w, status});
      }
    }
    all_ok_ = !workers_.empty();
    for (const auto& w : workers_)
      if (w.running) all_ok_ = false;
    return ended;
  }
  void mark_failed() { failed_ = true; }
  bool failed() const { return failed_; }

  void signal_all(int sig) {
    for (auto& w : workers_)
      if (w.running) kill(w.pid, sig);
  }

  // SIGTERM, then SIGKILL after the grace period; returns when every worker is gone, with the
  // workers that died of a signal this stop did not send. A rank killed from outside closes
  // its sockets before it can be reaped, so the others' collective errors can make the agent
  // stop it before its death was seen; its cause must not pass for the stop.
  std::vector<std::pair<Worker*, int>> stop() {
    std::vector<std::pair<Worker*, int>> foreign;
    signal_all(SIGTERM);
    bool escalated = false;
    auto deadline = Clock::now() + o_.grace_period;
    while (any_running()) {
      if (Clock::now() > deadline) {
        signal_all(SIGKILL);
        escalated = true;
      }
      std::vector<zmq::pollitem_t> items;
      add_poll_items(items);
      if (!items.empty()) zmq::poll(items.data(), items.size(), std::chrono::milliseconds(20));
      else usleep(20000);
      pump_output();
      for (auto [w, status] : reap())
        if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM && !(escalated && WTERMSIG(status) == SIGKILL))
          foreign.push_back({w, status});
    }
    for (auto& w : workers_) close_pipes(w);
    all_ok_ = false;
    return foreign;
  }

  void progress(int64_t done, int64_t total) {
    if (!tty_) return;
    const int width = 30;
    int filled = total > 0 ? int(width * done / total) : width;
    bar_ = "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "] " +
           std::to_string(done) + "/" + std::to_string(total);
    std::printf("\r\033[K%s", bar_.c_str());
    std::fflush(stdout);
  }
  void end_progress() {
    if (tty_ && !bar_.empty()) std::printf("\n");
    bar_.clear();
    std::fflush(stdout);
  }

 private:
  void read_pipe(Worker& w, int s) {
    if (w.fds[s] < 0) return;
    char buf[4096];
    for (;;) {
      ssize_t n = read(w.fds[s], buf, sizeof buf);
      if (n > 0) {
        w.partial[s].append(buf, size_t(n));
        size_t nl;
        while ((nl = w.partial[s].find('\n')) != std::string::npos) {
          emit(w, s, w.partial[s].substr(0, nl));
          w.partial[s].erase(0, nl + 1);
        }
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (!w.partial[s].empty()) emit(w, s, w.partial[s]);
        w.partial[s].clear();
        close(w.fds[s]);
        w.fds[s] = -1;
      }
      return;
    }
  }
  void close_pipes(Worker& w) {
    for (int s = 0; s < 2; ++s) read_pipe(w, s);
    for (int& fd : w.fds)
      if (fd >= 0) {
        close(fd);
        fd = -1;
      }
  }
  void emit(const Worker& w, int s, std::string line) {
    // A worker's own carriage-return redraws make no sense behind a prefix.
    auto cr = line.rfind('\r');
    if (cr != std::string::npos) line = line.substr(cr + 1);
    FILE* f = s == 0 ? stdout : stderr;
    if (tty_ && !bar_.empty()) std::printf("\r\033[K");
    std::fprintf(f, "[rank %d] %s\n", w.rank, line.c_str());
    std::fflush(f);
    if (tty_ && !bar_.empty()) {
      std::printf("%s", bar_.c_str());
      std::fflush(stdout);
    }
  }

  const AgentOptions& o_;
  std::vector<std::string> args_;
  std::vector<Worker> workers_;
  bool tty_ = false, all_ok_ = false, failed_ = false;
  std::string bar_;
};

// ---------------------------------------------------------------------------------------
// Node 0's coordinator: rendezvous, start/stop/restart decisions, the job's verdict.

class Coordinator {
 public:
  Coordinator(zmq::context_t& ctx, const AgentOptions& o) : o_(o), router_(ctx, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 2000);
    const int port = o.master_port ? o.master_port : (o.nnodes > 1 ? kDefaultAgentPort : 0);
    // Other nodes reach it on any interface; a one-node job stays on loopback.
    std::string where = o.nnodes > 1 ? "tcp://*:" : "tcp://127.0.0.1:";
    try {
      router_.bind(where + (port ? std::to_string(port) : std::string("*")));
    } catch (const zmq::error_t& e) {
      throw std::runtime_error("node 0: cannot listen on port " + std::to_string(port) +
                               " (--master-port) for the agents' rendezvous: " + e.what() +
                               (e.num() == EADDRINUSE ? "; another program (or another ftrun job) holds it: "
                                                        "pick another --master-port"
                                                      : ""));
    }
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    nodes_.resize(size_t(o.nnodes));
    join_deadline_ = Clock::now() + o.rendezvous_timeout;
  }

  // Where this node's own agent connects.
  std::string local_endpoint() const {
    auto colon = endpoint_.rfind(':');
    return "tcp://127.0.0.1:" + endpoint_.substr(colon + 1);
  }
  int port() const { return std::stoi(endpoint_.substr(endpoint_.rfind(':') + 1)); }
  zmq::socket_t& socket() { return router_; }
  bool finished() const { return finished_; }

  void tick() {
    std::string id;
    while (auto m = recv_json(router_, &id)) handle(id, *m);
    auto now = Clock::now();
    if (finished_) return;
    if (now - last_hb_ > kAgentHeartbeat) {
      last_hb_ = now;
      for (auto& n : nodes_)
        if (n.joined && !n.lost) send_json_to(router_, n.id, {{"t", "hb"}});
    }
    if (phase_ == Phase::joining && now > join_deadline_) {
      std::string missing, joined;
      for (size_t i = 0; i < nodes_.size(); ++i) {
        std::string& list = nodes_[i].joined ? joined : missing;
        list += (list.empty() ? "" : ", ") + std::to_string(i);
      }
      finish(1, "rendezvous timed out after " + secs_text(o_.rendezvous_timeout) + ": node(s) " + joined + " of " +
                    std::to_string(o_.nnodes) + " joined, missing node(s) " + missing +
                    " (start each with the same --nnodes " + std::to_string(o_.nnodes) + ", --master-addr and "
                    "--master-port " + std::to_string(port()) + ")");
      return;
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      auto& n = nodes_[i];
      if (!n.joined || n.lost || now - n.last_seen < o_.heartbeat_timeout) continue;
      n.lost = true;
      failure(int(i), -1, "lost", "lost contact with the agent of node " + std::to_string(i) + " (" + n.host +
                                      ") for " + secs_text(o_.heartbeat_timeout));
      if (phase_ == Phase::joining) {
        finish(1, failures_.front().what);
        return;
      }
    }
    if (phase_ == Phase::stopping) maybe_restart();
  }

 private:
  enum class Phase { joining, running, stopping };
  struct Node {
    std::string id, host, config;
    bool joined = false, lost = false, stopped = false, done = false;
    Clock::time_point last_seen;
  };
  struct Failure {
    int node, rank;
    std::string kind, what;
    int signal = 0;  // for "interrupted": the signal the agent received
    int priority() const {
      // The root cause first: a rank killed from outside, a hang or a lost node, or the user's
      // interrupt; then errors; last, collective errors that other ranks' deaths cause.
      if (kind == "signal" || kind == "hang" || kind == "stall" || kind == "lost" || kind == "interrupted") return 0;
      if (what.find("exited or crashed") != std::string::npos || what.find("did not join") != std::string::npos)
        return 2;
      return 1;
    }
  };

  void handle(const std::string& id, const json& m) {
    const std::string t = m.value("t", "");
    int node = -1;
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].joined && nodes_[i].id == id) node = int(i);
    if (node >= 0) nodes_[size_t(node)].last_seen = Clock::now();
    if (t == "hello" && finished_) {
      // Too late to join: the job failed before (at rendezvous, a node's hello can overtake
      // node 0's own agent's), and this agent must hear why as well.
      send_json_to(router_, id, {{"t", "exit"}, {"code", verdict_code_}, {"why", verdict_why_}});
      return;
    }
    if (t == "hello") return hello(id, m);
    if (node < 0 || finished_) return;
    if (t == "failed") {
      // A report that arrives after its attempt was stopped must not stop the next one.
      if (m.value("attempt", attempt_) != attempt_) return;
      failure(node, m.value("rank", -1), m.value("kind", "error"), m.value("what", std::string("?")),
              m.value("signal", 0), m.value("step", int64_t(-1)));
    } else if (t == "stopped" && m.value("attempt", -1) == attempt_) {
      nodes_[size_t(node)].stopped = true;
    } else if (t == "done" && m.value("attempt", -1) == attempt_ && phase_ == Phase::running) {
      nodes_[size_t(node)].done = true;
      if (std::all_of(nodes_.begin(), nodes_.end(), [](const Node& n) { return n.done; })) finish(0, "");
    }
  }

  void hello(const std::string& id, const json& m) {
    const int node = m.value("node", -1);
    const std::string host = m.value("host", std::string("?"));
    auto who = "node " + std::to_string(node) + " (" + host + ")";
    std::string why;
    if (phase_ != Phase::joining)
      why = who + " tried to join a job that has already started";
    else if (m.value("nnodes", -1) != o_.nnodes)
      why = who + " was started with --nnodes " + std::to_string(m.value("nnodes", -1)) + " but node 0 with --nnodes " +
            std::to_string(o_.nnodes);
    else if (node < 0 || node >= o_.nnodes)
      why = who + ": --node-rank must be in 0.." + std::to_string(o_.nnodes - 1);
    else if (nodes_[size_t(node)].joined)
      why = "two agents say they are node " + std::to_string(node) + " (" + nodes_[size_t(node)].host + " and " + host +
            "): give each node its own --node-rank";
    else if (m.value("nproc", -1) != o_.nproc_per_node)
      why = who + " was started with --nproc-per-node " + std::to_string(m.value("nproc", -1)) +
            " but node 0 with " + std::to_string(o_.nproc_per_node) + " (every node must run the same number)";
    else if (m.value("config_hash", std::string()) != o_.config_fingerprint)
      why = "the config differs between node 0 (" + o_.config_path + ", fingerprint " + o_.config_fingerprint +
            ") and " + who + " (" + m.value("config", std::string("?")) + ", fingerprint " +
            m.value("config_hash", std::string("?")) + "): start every node with the same config file and --set options";
    if (!why.empty()) {
      send_json_to(router_, id, {{"t", "exit"}, {"code", 1}, {"why", why}});
      finish(1, why);
      return;
    }
    auto& n = nodes_[size_t(node)];
    n.id = id;
    n.host = host;
    n.joined = true;
    n.last_seen = Clock::now();
    if (std::all_of(nodes_.begin(), nodes_.end(), [](const Node& x) { return x.joined; })) start(0);
  }

  void start(int attempt) {
    attempt_ = attempt;
    phase_ = Phase::running;
    failures_.clear();
    const int worker_port = free_tcp_port();
    const std::string addr = o_.nnodes > 1 ? o_.master_addr : "127.0.0.1";
    for (auto& n : nodes_) {
      n.stopped = n.done = false;
      send_json_to(router_, n.id,
                   {{"t", "start"}, {"attempt", attempt}, {"master_addr", addr}, {"worker_port", worker_port}});
    }
  }

  // `step`: for a stall, the step count the stuck ranks stopped after (passed on to the other
  // agents so they name their ranks stuck at that step too).
  void failure(int node, int rank, const std::string& kind, const std::string& what, int signal = 0, int64_t step = -1) {
    failures_.push_back({node, rank, kind, what, signal});
    if (phase_ != Phase::running) return;
    phase_ = Phase::stopping;
    stop_deadline_ = Clock::now() + o_.grace_period + o_.heartbeat_timeout;
    for (auto& n : nodes_)
      if (!n.lost)
        send_json_to(router_, n.id,
                     {{"t", "stop"}, {"attempt", attempt_}, {"stall", kind == "stall"}, {"stall_step", step}});
  }

  void maybe_restart() {
    bool all = true;
    for (auto& n : nodes_) all = all && (n.stopped || n.lost);
    if (!all && Clock::now() < stop_deadline_) return;
    const Failure* root = &failures_.front();
    for (const auto& f : failures_)
      if (f.priority() < root->priority()) root = &f;
    std::string why = root->what;
    size_t others = failures_.size() - 1;
    // Stuck ranks wait for each other, so every node's agent reports its own at about the same
    // time: name them all, whichever node's report came first.
    if (root->kind == "stall") {
      for (const auto& f : failures_)
        if (&f != root && f.kind == "stall") {
          why += "; " + f.what;
          --others;
        }
      why += " (stuck in a collective, a deadlock or a loop, while still sending heartbeats); killed";
    }
    if (others > 0) why += " (" + std::to_string(others) + " other failure report(s) followed)";
    const bool lost = std::any_of(nodes_.begin(), nodes_.end(), [](const Node& n) { return n.lost; }) || !all;
    const bool interrupted = root->kind == "interrupted";
    if (attempt_ < o_.max_restarts && !lost && !interrupted) {
      std::cerr << "ftrun agent: restarting every worker (restart " << attempt_ + 1 << " of " << o_.max_restarts
                << ") after: " << why << std::endl;
      start(attempt_ + 1);
      return;
    }
    if (o_.max_restarts > 0 && attempt_ >= o_.max_restarts) why += "; gave up after " + std::to_string(attempt_) + " restart(s)";
    finish(interrupted ? 128 + root->signal : 1, why);
  }

  void finish(int code, const std::string& why) {
    finished_ = true;
    verdict_code_ = code;
    verdict_why_ = why;
    for (auto& n : nodes_)
      if (n.joined && !n.lost) send_json_to(router_, n.id, {{"t", "exit"}, {"code", code}, {"why", why}});
  }

  const AgentOptions& o_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::vector<Node> nodes_;
  std::vector<Failure> failures_;
  Phase phase_ = Phase::joining;
  int attempt_ = 0;
  bool finished_ = false;
  int verdict_code_ = 1;
  std::string verdict_why_;
  Clock::time_point join_deadline_, stop_deadline_, last_hb_;
};

std::string resolve_host(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) throw std::runtime_error("--master-addr " + host + ": cannot resolve it (" + gai_strerror(rc) + ")");
  char buf[64] = {0};
  getnameinfo(res->ai_addr, res->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST);
  freeaddrinfo(res);
  return buf;
}

std::string hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// ---------------------------------------------------------------------------------------
// One node's agent: says hello to the coordinator, starts and stops this node's workers when
// told, reports their failures, and exits with the job's verdict. One thread, one poll loop;
// the order of the steps in a turn of it matters (deaths are reported before a stop, errors in
// flight are awaited before "stopped"), and the launcher's tests depend on it.

class NodeAgent {
 public:
  // The options are validated already. Rendezvous starts here: the sockets exist and the
  // hello is sent (unless the test hook holds it back).
  NodeAgent(const AgentOptions& options, const std::vector<std::string>& worker_args)
      : o_(options),
        me_("node " + std::to_string(o_.node_rank)),
        coordinator_addr_(o_.nnodes > 1 ? resolve_host(o_.master_addr) : "127.0.0.1"),
        ctx_(1),
        workers_(o_, worker_args) {
    // After the host lookup, which may block: until here a signal ends the process as usual.
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGPIPE, SIG_IGN);

    if (o_.node_rank == 0) coordinator_ = std::make_unique<Coordinator>(ctx_, o_);
    agent_port_ = coordinator_ ? coordinator_->port() : (o_.master_port ? o_.master_port : kDefaultAgentPort);
    const std::string coordinator_endpoint = coordinator_ ? coordinator_->local_endpoint()
                                                          : "tcp://" + coordinator_addr_ + ":" + std::to_string(agent_port_);

    up_ = zmq::socket_t(ctx_, zmq::socket_type::dealer);  // to the coordinator
    up_.set(zmq::sockopt::linger, 2000);
    up_.connect(coordinator_endpoint);
    from_workers_ = zmq::socket_t(ctx_, zmq::socket_type::pull);
    from_workers_.set(zmq::sockopt::linger, 0);
    from_workers_.bind("tcp://127.0.0.1:*");
    worker_endpoint_ = from_workers_.get(zmq::sockopt::last_endpoint);

    // Test hook: hold this agent's hello back (while its coordinator already runs), so another
    // node's hello is the first the coordinator sees.
    const char* hold = std::getenv("FTRUN_TEST_HOLD_HELLO_MS");
    hello_at_ = Clock::now() + std::chrono::milliseconds(hold ? std::atoi(hold) : 0);
    if (!hold) {
      say_hello();
      hello_sent_ = true;
    }
    started_ = last_hb_ = Clock::now();
  }

  // The poll loop; returns the process's exit code.
  int run() {
    for (;;) {
      const auto now = poll();
      if (auto code = handle_signal()) return *code;
      if (!hello_sent_ && now >= hello_at_) {
        say_hello();
        hello_sent_ = true;
      }
      if (coordinator_) coordinator_->tick();
      if (auto code = handle_coordinator(now)) return *code;
      if (auto code = check_coordinator(now)) return *code;
      drain_workers();
      workers_.pump_output();
      reap_and_report();
      if (running_ && !interrupted_) watch_workers(now);
    }
  }

 private:
  void say_hello() {
    send_json(up_, {{"t", "hello"},
                    {"node", o_.node_rank},
                    {"nnodes", o_.nnodes},
                    {"nproc", o_.nproc_per_node},
                    {"config_hash", o_.config_fingerprint},
                    {"config", o_.config_path},
                    {"host", hostname()}});
  }

  // Waits up to 50 ms for the coordinator, the workers or their output; returns the time after.
  Clock::time_point poll() {
    std::vector<zmq::pollitem_t> items = {{up_.handle(), 0, ZMQ_POLLIN, 0}, {from_workers_.handle(), 0, ZMQ_POLLIN, 0}};
    if (coordinator_) items.push_back({coordinator_->socket().handle(), 0, ZMQ_POLLIN, 0});
    workers_.add_poll_items(items);
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(50));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    return Clock::now();
  }

  // Waits up to 20 ms for a worker message, then handles what came.
  void poll_workers_briefly() {
    zmq::pollitem_t item{from_workers_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(20));
    drain_workers();
  }

  void report(int rank, const std::string& kind, const std::string& what, int signal = 0, int64_t step = -1) {
    workers_.mark_failed();
    send_json(up_, {{"t", "failed"},
                    {"attempt", attempt_},
                    {"rank", rank},
                    {"kind", kind},
                    {"what", what},
                    {"signal", signal},
                    {"step", step}});
  }

  // Messages from this attempt's workers: liveness, rank 0's progress, errors.
  void drain_workers() {
    while (auto m = recv_json(from_workers_)) {
      const int rank = m->value("rank", -1), pid = m->value("pid", -1);
      auto& ws = workers_.workers();
      auto it = std::find_if(ws.begin(), ws.end(), [&](const Worker& w) { return w.rank == rank && w.pid == pid; });
      if (it == ws.end()) continue;  // a worker of an earlier attempt
      it->last_heard = Clock::now();
      const std::string t = m->value("t", "");
      if (t == "hello") it->said_hello = true;
      if (t == "progress") {
        it->steps_done = m->value("done", int64_t(0));
        it->steps_total = m->value("total", int64_t(0));
        it->last_step = it->last_heard;
        if (rank == 0) workers_.progress(it->steps_done, it->steps_total);
      }
      if (t == "error" && !it->reported && !interrupted_) {
        it->reported = true;
        it->error = m->value("what", std::string("?"));
        report(rank, "error", "rank " + std::to_string(rank) + " (" + me_ + ", pid " + std::to_string(it->pid) +
                                  ") failed: " + it->error);
      }
    }
  }

  void report_death(Worker* w, int status) {
    if (w->reported) return;
    w->reported = true;
    report(w->rank, WIFSIGNALED(status) ? "signal" : "exit",
           "rank " + std::to_string(w->rank) + " (" + me_ + ", pid " + std::to_string(w->pid) + ") " +
               describe_exit(status) + (w->error.empty() ? "" : ": " + w->error));
  }

  // Deaths are reported before any stop, so a rank that died on its own is never mistaken
  // for one this agent stopped (the coordinator picks the root cause from the reports).
  void reap_and_report() {
    for (auto [w, status] : workers_.reap()) {
      if (w->reported || interrupted_) continue;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
      // A worker that exits on an error sends it first; give it a moment to arrive, so the
      // report carries the error rather than just the exit code.
      for (int i = 0; i < 15 && !w->reported && WIFEXITED(status); ++i) poll_workers_briefly();
      report_death(w, status);
    }
  }

  // --progress-timeout: ranks that finished a step once but none since. Stuck ranks usually
  // hold each other in a collective, so all of this node's are named; the job stops either way.
  // After the last step (the final save and test pass) nothing is watched.
  // `job_stuck`: another node's ranks already were (after step `stuck_step`); name this node's
  // ranks that are stuck too.
  void check_progress(Clock::time_point now, bool job_stuck, int64_t stuck_step = -1) {
    auto watched = [](const Worker& w) {
      return w.running && !w.reported && w.steps_done >= 0 && w.steps_done < w.steps_total;
    };
    auto& ws = workers_.workers();
    for (const auto& w : ws)
      if (watched(w) && now - w.last_step > o_.progress_timeout) stuck_step = std::max<int64_t>(stuck_step, w.steps_done);
    if (!job_stuck && stuck_step < 0) return;
    // Training steps are synchronous: no rank finishes step N+1 while a peer is stuck after
    // step N, so every rank at or before a stuck rank's step is stuck with it, however late its
    // progress message arrived (on a loaded machine that can be a second or more). Ranks
    // silent for half the limit are named too.
    std::string who;
    int first = -1;
    for (auto& w : ws) {
      if (!watched(w) || (w.steps_done > stuck_step && now - w.last_step <= o_.progress_timeout / 2)) continue;
      w.reported = true;
      kill(w.pid, SIGKILL);
      who += std::string(who.empty() ? "" : ", ") + "rank " + std::to_string(w.rank) + " (pid " + std::to_string(w.pid) +
             ", after step " + std::to_string(w.steps_done) + ")";
      if (first < 0) first = w.rank;
    }
    if (first < 0) return;
    report(first, "stall",
           (job_stuck ? "also stuck (no step after step " + std::to_string(stuck_step) + " or silent for " +
                            secs_text(o_.progress_timeout / 2) + ") on "
                      : "no training step finished for " + secs_text(o_.progress_timeout) + " on ") +
               me_ + ": " + who,
           0, stuck_step);
  }

  int finish_locally(int code, const std::string& why) {
    if (workers_.any_running()) workers_.stop();
    workers_.end_progress();
    if (code != 0) std::cerr << "ftrun: " << me_ << ": job failed: " << why << std::endl;
    else if (o_.node_rank == 0) std::cerr << "ftrun agent: all " << o_.nnodes * o_.nproc_per_node << " ranks finished" << std::endl;
    return code;
  }

  // SIGINT/SIGTERM: forwarded to the workers once and reported; a second one kills them.
  // Returns the exit code when the agent is done.
  std::optional<int> handle_signal() {
    if (!g_signal) return std::nullopt;
    const int sig = g_signal;
    g_signal = 0;
    if (interrupted_) {  // a second signal: no more waiting for the others
      workers_.signal_all(SIGKILL);
      return finish_locally(128 + sig, "interrupted twice");
    }
    interrupted_ = true;
    workers_.signal_all(sig);
    report(-1, "interrupted",
           "the agent of " + me_ + " received SIG" + std::string(sigabbrev_np(sig)) + " and forwarded it to its workers",
           sig);
    if (!running_) return finish_locally(128 + sig, "interrupted during the rendezvous");
    return std::nullopt;
  }

  // The coordinator's start / stop / exit; returns the exit code on "exit".
  std::optional<int> handle_coordinator(Clock::time_point now) {
    while (auto m = recv_json(up_)) {
      last_from_coordinator_ = now;
      const std::string t = m->value("t", "");
      if (t == "start") {
        if (workers_.any_running()) workers_.stop();
        attempt_ = m->value("attempt", 0);
        workers_.start(attempt_, m->value("master_addr", std::string()), m->value("worker_port", 0), worker_endpoint_);
        running_ = true;
        done_sent_ = false;
      } else if (t == "stop" && m->value("attempt", -1) == attempt_) {
        stop_attempt(now, m->value("stall", false), m->value("stall_step", int64_t(-1)));
      } else if (t == "exit") {
        return finish_locally(m->value("code", 1), m->value("why", std::string("stopped by node 0")));
      }
    }
    return std::nullopt;
  }

  // The coordinator's "stop": report what already failed, stop the workers, answer "stopped".
  void stop_attempt(Clock::time_point now, bool stall, int64_t stall_step) {
    drain_workers();
    reap_and_report();
    if (stall && o_.progress_timeout.count() > 0) check_progress(now, true, stall_step);
    for (auto [w, status] : workers_.stop())
      if (!interrupted_) report_death(w, status);
    // A rank that failed on its own may have been stopped while its error was still in
    // flight (it is sent as the rank exits); it reaches the coordinator before "stopped".
    for (int i = 0; i < 5; ++i) poll_workers_briefly();
    send_json(up_, {{"t", "stopped"}, {"attempt", attempt_}});
  }

  // The coordinator must answer the hello in time and then keep sending; this agent sends
  // its own heartbeats. Returns the exit code when node 0 is gone.
  std::optional<int> check_coordinator(Clock::time_point now) {
    const bool heard = last_from_coordinator_ != Clock::time_point{};
    if (!heard && now - started_ > o_.rendezvous_timeout + std::chrono::seconds(2))
      return finish_locally(1, "no answer from the agent of node 0 at " + coordinator_addr_ + ":" +
                                   std::to_string(agent_port_) + " within " + secs_text(o_.rendezvous_timeout) +
                                   " (is node 0 started, with the same --master-addr/--master-port, and is the "
                                   "port reachable from here?)");
    if (heard && now - last_from_coordinator_ > o_.heartbeat_timeout)
      return finish_locally(1, "lost contact with the agent of node 0 (" + coordinator_addr_ + ":" +
                                   std::to_string(agent_port_) + ") for " + secs_text(o_.heartbeat_timeout) +
                                   "; stopped this node's workers");
    if (now - last_hb_ > kAgentHeartbeat) {
      last_hb_ = now;
      send_json(up_, {{"t", "hb"}});
    }
    return std::nullopt;
  }

  // While an attempt runs: kill hung ranks, watch progress, say "done" once all exited well.
  void watch_workers(Clock::time_point now) {
    for (auto& w : workers_.workers()) {
      // Before its hello a worker is still loading (libtorch, the model): allow more time.
      auto limit = w.said_hello ? o_.heartbeat_timeout : std::max(o_.heartbeat_timeout, o_.rendezvous_timeout);
      if (w.running && !w.reported && now - w.last_heard > limit) {
        w.reported = true;
        kill(w.pid, SIGKILL);
        report(w.rank, "hang", "rank " + std::to_string(w.rank) + " (" + me_ + ", pid " + std::to_string(w.pid) +
                                   ") sent no heartbeat for " + secs_text(limit) + " (hung or stopped); killed it");
      }
    }
    if (o_.progress_timeout.count() > 0) check_progress(now, false);
    if (!done_sent_ && !workers_.failed() && workers_.all_exited_ok()) {
      done_sent_ = true;
      send_json(up_, {{"t", "done"}, {"attempt", attempt_}});
    }
  }

  // Destroyed in reverse order: the sockets close (and linger) before the context ends, and
  // the options outlive LocalWorkers and Coordinator, which keep a reference to them.
  AgentOptions o_;
  std::string me_, coordinator_addr_, worker_endpoint_;
  int agent_port_ = 0;
  zmq::context_t ctx_;
  std::unique_ptr<Coordinator> coordinator_;
  zmq::socket_t up_, from_workers_;
  LocalWorkers workers_;
  int attempt_ = -1;
  bool hello_sent_ = false, running_ = false, done_sent_ = false, interrupted_ = false;
  Clock::time_point hello_at_, started_, last_from_coordinator_{}, last_hb_;
};

}  // namespace

void validate(const AgentOptions& o) {
  if (o.nproc_per_node < 1) throw std::invalid_argument("--nproc-per-node must be at least 1");
  if (o.nnodes < 1) throw std::invalid_argument("--nnodes must be at least 1");
  if (o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw std::invalid_argument("--node-rank " + std::to_string(o.node_rank) + " is out of range for --nnodes " +
                                std::to_string(o.nnodes) + " (expected 0.." + std::to_string(o.nnodes - 1) + ")");
  if (o.nnodes > 1 && o.master_addr.empty())
    throw std::invalid_argument("--master-addr is required with --nnodes " + std::to_string(o.nnodes) +
                                " (the address of node 0, the same on every node)");
  if (o.master_port < 0 || o.master_port > 65535) throw std::invalid_argument("--master-port must be in 0..65535");
  if (o.max_restarts < 0) throw std::invalid_argument("--max-restarts must be >= 0");
  // An agent stopping its ranks sends no heartbeats for up to the grace period.
  if (o.grace_period >= o.heartbeat_timeout)
    throw std::invalid_argument("--grace-period (" + secs_text(o.grace_period) +
                                ") must be shorter than --heartbeat-timeout (" + secs_text(o.heartbeat_timeout) + ")");
}

int run_agent(const AgentOptions& options, const std::vector<std::string>& worker_args) {
  validate(options);
  NodeAgent agent(options, worker_args);
  return agent.run();
}

}  // namespace ftrun::launcher
