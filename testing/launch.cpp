// Multi-process test helper (see launch.h). Children are started with fork + execve: only
// async-signal-safe calls happen between the two, because the parent (gtest, libtorch) may
// have threads. Each child leads its own process group so a timeout kills what it started too
// (mpirun's daemons and ranks).
#include "testing/launch.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "testing/launch_impl.h"

extern char** environ;

namespace ftrun::testing {
namespace detail {

using Clock = std::chrono::steady_clock;

static bool is_launcher_var(const std::string& name) {
  static const std::set<std::string> exact = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                                              "MASTER_ADDR", "MASTER_PORT", kChildVar, "FTRUN_TEST_NAME"};
  if (exact.count(name)) return true;
  for (const char* prefix : {"OMPI_COMM_WORLD_", "PMIX_", "PMI_", "SLURM_"})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

std::map<std::string, std::string> clean_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = kv.substr(0, eq);
    if (!is_launcher_var(name)) env[name] = kv.substr(eq + 1);
  }
  if (!env.count("OMP_NUM_THREADS")) env["OMP_NUM_THREADS"] = "1";  // as torchrun does
  return env;
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("launch: cannot read /proc/self/exe");
  return std::string(buf, n);
}

static std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// execve does not search PATH, and searching after fork is not async-signal-safe.
static std::string resolve_program(const std::string& prog, const std::map<std::string, std::string>& env) {
  if (prog.find('/') != std::string::npos) return prog;
  auto it = env.find("PATH");
  std::stringstream ss(it == env.end() ? "/usr/local/bin:/usr/bin:/bin" : it->second);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string cand = (dir.empty() ? "." : dir) + "/" + prog;
    if (access(cand.c_str(), X_OK) == 0) return cand;
  }
  throw std::runtime_error("launch: program '" + prog + "' not found in PATH");
}

// Starts every spec, waits under the deadline, collects the results.
LaunchResult run_all(const std::vector<Spec>& specs, const LaunchOptions& opt) {
  char tmpl[] = "/tmp/ftrun-launch-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error(std::string("launch: mkdtemp: ") + std::strerror(errno));
  const std::string dir = tmpl;

  const auto start = Clock::now();
  std::vector<pid_t> pids;
  for (size_t i = 0; i < specs.size(); ++i) {
    // Everything the child needs is built before fork.
    const std::string program = resolve_program(specs[i].argv.at(0), specs[i].env);
    std::vector<std::string> envs;
    for (const auto& [k, v] : specs[i].env) envs.push_back(k + "=" + v);
    std::vector<char*> argv, envp;
    for (const auto& a : specs[i].argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : envs) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const std::string out = dir + "/out." + std::to_string(i), err = dir + "/err." + std::to_string(i);
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("launch: fork: ") + std::strerror(errno));
    if (pid == 0) {
      setpgid(0, 0);
      const int fo = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int fe = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int fi = open("/dev/null", O_RDONLY);
      if (fo < 0 || fe < 0 || fi < 0) _exit(125);
      dup2(fi, 0);
      dup2(fo, 1);
      dup2(fe, 2);
      execve(program.c_str(), argv.data(), envp.data());
      const char msg[] = "launch: execve failed\n";
      (void)!write(2, msg, sizeof msg - 1);
      _exit(127);
    }
    setpgid(pid, pid);  // also from the parent, so a kill right away reaches the group
    pids.push_back(pid);
  }

  LaunchResult result;
  result.children.resize(specs.size());
  std::vector<bool> done(specs.size(), false);
  size_t remaining = specs.size();
  auto reap = [&](size_t i, bool killed) {
    // The leader has exited (not yet reaped); clear anything it left in its group, then reap.
    kill(-pids[i], SIGKILL);
    int status = 0;
    while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR) {
    }
    auto& c = result.children[i];
    c.rank = static_cast<int>(i);
    c.killed_on_timeout = killed;
    if (WIFEXITED(status)) {
      c.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      c.term_signal = WTERMSIG(status);
      c.exit_code = 128 + c.term_signal;
    }
    done[i] = true;
    --remaining;
  };
  auto kill_rest = [&](bool timeout) {
    for (size_t i = 0; i < pids.size(); ++i)
      if (!done[i]) kill(-pids[i], SIGTERM);
    const auto grace = Clock::now() + std::chrono::seconds(2);
    while (remaining > 0 && Clock::now() < grace) {
      for (size_t i = 0; i < pids.size(); ++i) {
        siginfo_t si{};
        if (!done[i] && waitid(P_PID, pids[i], &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pids[i])
          reap(i, timeout);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (size_t i = 0; i < pids.size(); ++i)
      if (!done[i]) {
        kill(-pids[i], SIGKILL);
        reap(i, timeout);
      }
  };

  const auto deadline = start + opt.timeout;
  while (remaining > 0) {
    bool failure = false;
    for (size_t i = 0; i < pids.size(); ++i) {
      siginfo_t si{};
      if (done[i] || waitid(P_PID, pids[i], &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != pids[i]) continue;
      reap(i, false);
      if (result.children[i].exit_code != 0) failure = true;
    }
    if (remaining == 0) break;
    if (Clock::now() > deadline) {
      result.timed_out = true;
      kill_rest(true);
      break;
    }
    if (failure && opt.kill_all_on_failure) {
      kill_rest(false);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();

  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string out = dir + "/out." + std::to_string(i), err = dir + "/err." + std::to_string(i);
    result.children[i].out = read_file(out);
    result.children[i].err = read_file(err);
    result.children[i].body_finished = result.children[i].err.find(kBodyMarker) != std::string::npos;
    std::remove(out.c_str());
    std::remove(err.c_str());
  }
  rmdir(dir.c_str());
  return result;
}

}  // namespace detail

using namespace detail;

namespace {

std::string tail(const std::string& s, size_t n) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

}  // namespace

bool LaunchResult::ok() const {
  if (timed_out) return false;
  for (const auto& c : children)
    if (c.exit_code != 0 || (bodies_expected && !c.body_finished)) return false;
  return true;
}

int LaunchResult::bodies_finished() const {
  int n = 0;
  for (const auto& c : children)
    for (size_t at = c.err.find(kBodyMarker); at != std::string::npos; at = c.err.find(kBodyMarker, at + 1)) ++n;
  return n;
}

std::string LaunchResult::report() const {
  std::ostringstream os;
  os << children.size() << " process(es), " << seconds << " s" << (timed_out ? ", TIMED OUT" : "");
  if (master_port) os << ", MASTER_PORT=" << master_port;
  os << "\n";
  for (const auto& c : children) {
    os << "--- rank " << c.rank << ": ";
    if (c.term_signal) os << "killed by signal " << c.term_signal;
    else os << "exit " << c.exit_code;
    if (c.killed_on_timeout) os << " (killed at the deadline)";
    if (bodies_expected && !c.body_finished) os << " (its test body never finished)";
    os << "\n";
    if (c.exit_code != 0 || timed_out) {
      if (!c.out.empty()) os << "[stdout]\n" << tail(c.out, 4000) << "\n";
      if (!c.err.empty()) os << "[stderr]\n" << tail(c.err, 4000) << "\n";
    }
  }
  return os.str();
}

std::filesystem::path shared_test_dir(const std::string& name, LaunchOptions& options) {
  if (is_child()) {
    const char* dir = std::getenv("FTRUN_TEST_OUT");
    if (!dir) throw std::runtime_error("shared_test_dir: FTRUN_TEST_OUT is not set in this rank");
    return dir;
  }
  auto dir = std::filesystem::temp_directory_path() / ("ftrun_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  options.env["FTRUN_TEST_OUT"] = dir.string();
  return dir;
}

bool is_child() {
  const char* v = std::getenv(kChildVar);
  return v && std::string(v) == "1";
}

int free_port() {
  std::random_device rd;
  std::mt19937 gen(rd() ^ static_cast<unsigned>(getpid()));
  std::uniform_int_distribution<int> pick(20000, 32000);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = pick(gen);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) continue;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    if (ok) return port;
  }
  throw std::runtime_error("launch: no free TCP port found in 20000-32000");
}

LaunchResult launch(int world_size, const std::string& exe, const std::vector<std::string>& args,
                    const LaunchOptions& options) {
  if (world_size < 1) throw std::invalid_argument("launch: world_size must be >= 1");
  const int port = options.master_port ? options.master_port : free_port();
  const int local = options.local_world_size ? options.local_world_size : world_size;
  const auto base = clean_environment();
  std::vector<Spec> specs;
  for (int r = 0; r < world_size; ++r) {
    Spec s;
    s.argv.push_back(exe);
    s.argv.insert(s.argv.end(), args.begin(), args.end());
    s.env = base;
    for (const auto& [k, v] : options.env) s.env[k] = v;
    s.env["RANK"] = std::to_string(r);
    s.env["WORLD_SIZE"] = std::to_string(world_size);
    s.env["LOCAL_RANK"] = std::to_string(r % local);
    s.env["LOCAL_WORLD_SIZE"] = std::to_string(local);
    s.env["GROUP_RANK"] = std::to_string(r / local);
    s.env["MASTER_ADDR"] = "127.0.0.1";
    s.env["MASTER_PORT"] = std::to_string(port);
    specs.push_back(std::move(s));
  }
  LaunchResult r = run_all(specs, options);
  r.master_port = port;
  return r;
}

LaunchResult run_command(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                         std::chrono::milliseconds timeout) {
  if (argv.empty()) throw std::invalid_argument("run_command: empty command");
  Spec s;
  s.argv = argv;
  s.env = clean_environment();
  for (const auto& [k, v] : env) s.env[k] = v;
  LaunchOptions o;
  o.timeout = timeout;
  return run_all({s}, o);
}

}  // namespace ftrun::testing
