// Backend choice and the helpers every backend shares (argument checks, error wording, host
// addresses). The backends themselves are in gloo_comm.cpp, mpi_comm.cpp, nccl_comm.cpp.
#include "comm/rendezvous.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "comm/comm_impl.h"

#ifdef FTRUN_WITH_NCCL
#include <torch/cuda.h>
#endif

namespace ftrun::comm {

namespace detail {

std::string tensor_desc(const at::Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return std::string(c10::toString(t.scalar_type())) + " tensor of " + std::to_string(t.numel()) + " elements";
}

std::string duration_desc(Ms d) {
  const auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

void check_dense(const std::string& backend, const std::string& op, const at::Tensor& t) {
  auto bad = [&](const std::string& why) { throw std::invalid_argument(backend + " " + op + ": " + why); };
  if (!t.defined()) bad("tensor is undefined");
  if (!t.is_contiguous()) bad("tensor must be contiguous (" + tensor_desc(t) + ")");
  if (backend != "nccl" && !t.device().is_cpu()) bad("tensor must be on the CPU (" + t.device().str() + ")");
}

void check_reduce_scatter(const std::string& backend, const at::Tensor& input, const at::Tensor& output, int n) {
  check_dense(backend, "reduce_scatter", input);
  check_dense(backend, "reduce_scatter", output);
  if (input.scalar_type() != output.scalar_type())
    throw std::invalid_argument(backend + " reduce_scatter: input is " + tensor_desc(input) + " but output is " +
                                tensor_desc(output));
  if (input.numel() != output.numel() * n)
    throw std::invalid_argument(backend + " reduce_scatter: input has " + std::to_string(input.numel()) +
                                " elements, expected world_size (" + std::to_string(n) + ") x output (" +
                                std::to_string(output.numel()) + ")");
}

void check_all_gather(const std::string& backend, const at::Tensor& input, const at::Tensor& output, int n) {
  check_dense(backend, "all_gather", input);
  check_dense(backend, "all_gather", output);
  if (input.scalar_type() != output.scalar_type())
    throw std::invalid_argument(backend + " all_gather: input is " + tensor_desc(input) + " but output is " +
                                tensor_desc(output));
  if (output.numel() != input.numel() * n)
    throw std::invalid_argument(backend + " all_gather: output has " + std::to_string(output.numel()) +
                                " elements, expected world_size (" + std::to_string(n) + ") x input (" +
                                std::to_string(input.numel()) + ")");
}

void check_root(const std::string& backend, int root, int n) {
  if (root < 0 || root >= n)
    throw std::invalid_argument(backend + " broadcast: root " + std::to_string(root) + " is not a rank (world size " +
                                std::to_string(n) + ")");
}

std::string short_what(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

NoticeTimes notice_times() {
  NoticeTimes t;
  const char* env = std::getenv("FTRUN_WAIT_NOTICE");
  if (!env || !*env) return t;
  auto secs = [](const std::string& s, Ms fallback) {
    try {
      size_t used = 0;
      const double v = std::stod(s, &used);
      if (used == s.size() && v >= 0 && v < 1e9) return Ms(int64_t(v * 1000));
    } catch (const std::exception&) {
    }
    return fallback;
  };
  const std::string v(env);
  const auto comma = v.find(',');
  t.first = secs(v.substr(0, comma), t.first);
  if (comma != std::string::npos) t.every = secs(v.substr(comma + 1), t.every);
  if (t.every.count() <= 0) t.every = Ms(1);
  return t;
}

std::string waited_desc(Ms d) {
  if (d.count() >= 10000) return std::to_string(d.count() / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", double(d.count()) / 1000.0);
  return buf;
}

void print_notice(const std::string& line) {
  std::fprintf(stderr, "ftrun: %s\n", line.c_str());
  std::fflush(stderr);
}

struct WaitWatch::State {
  std::mutex m;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;
};

WaitWatch::WaitWatch(std::function<std::string(Ms elapsed)> describe) : state_(std::make_shared<State>()) {
  state_->thread = std::thread([st = state_, describe = std::move(describe)] {
    NoticeClock clock;
    const auto start = std::chrono::steady_clock::now();
    const Ms tick = std::clamp(std::min(clock.times().first, clock.times().every) / 4, Ms(10), Ms(1000));
    std::unique_lock<std::mutex> lk(st->m);
    while (!st->stop) {
      st->cv.wait_for(lk, tick);
      if (st->stop) break;
      const auto elapsed = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
      if (!clock.due(elapsed)) continue;
      lk.unlock();
      std::string line;
      try {
        line = describe(elapsed);
      } catch (...) {
      }
      if (!line.empty()) print_notice(line);
      lk.lock();
    }
  });
}

WaitWatch::~WaitWatch() {
  {
    std::lock_guard<std::mutex> lk(state_->m);
    state_->stop = true;
  }
  state_->cv.notify_all();
  state_->thread.join();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

std::string primary_address() {
  auto ipv4 = [](const sockaddr* sa) {
    char buf[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
    return std::string(buf);
  };
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) == 0) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* res = nullptr;
    if (getaddrinfo(host, nullptr, &hints, &res) == 0) {
      std::string found;
      for (addrinfo* a = res; a && found.empty(); a = a->ai_next) {
        const std::string s = ipv4(a->ai_addr);
        if (!is_loopback(s)) found = s;
      }
      freeaddrinfo(res);
      if (!found.empty()) return found;
    }
  }
  ifaddrs* ifs = nullptr;
  std::string found;
  if (getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i && found.empty(); i = i->ifa_next) {
      if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
        continue;
      found = ipv4(i->ifa_addr);
    }
    freeifaddrs(ifs);
  }
  return found.empty() ? "127.0.0.1" : found;
}

std::string address_toward(const std::string& peer) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(peer.c_str(), "9", &hints, &res) != 0) return primary_address();
  std::string found;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    if (connect(fd, res->ai_addr, res->ai_addrlen) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET_ADDRSTRLEN] = {0};
      inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf);
      found = buf;
    }
    close(fd);
  }
  freeaddrinfo(res);
  return found.empty() || found == "0.0.0.0" ? primary_address() : found;
}

}  // namespace detail

bool nccl_compiled() {
#ifdef FTRUN_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::string resolve_backend(const RankInfo& info, const std::string& backend) {
  std::string b = backend;
  std::transform(b.begin(), b.end(), b.begin(), [](unsigned char c) { return std::tolower(c); });
  if (b != "auto" && b != "gloo" && b != "mpi" && b != "nccl")
    throw std::invalid_argument("unknown distributed backend '" + backend + "' (choose auto, gloo, mpi or nccl)");
  if (info.world_size == 1) return "single";
  if (b == "auto") {
#ifdef FTRUN_WITH_NCCL
    if (torch::cuda::is_available()) return "nccl";
#endif
    return "gloo";
  }
  if (b == "nccl" && !nccl_compiled())
    throw std::invalid_argument("backend nccl needs a CUDA build of libtorch; this build is CPU-only (use gloo or mpi)");
  // A CUDA build on a machine without a usable GPU: say so here rather than let the first CUDA
  // call fail with the driver's message.
  if (b == "nccl" && !torch::cuda::is_available()) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    throw std::invalid_argument(std::string("backend nccl needs a CUDA GPU, and no CUDA GPU is usable here") +
                                (visible ? " (CUDA_VISIBLE_DEVICES=" + std::string(visible) + ")" : "") +
                                " (use gloo or mpi)");
  }
  if (b == "mpi") {
    // OpenMPI's mpirun exports OMPI_COMM_WORLD_*; a PMIx/PMI launch (srun --mpi=pmix) sets
    // PMIX_RANK / PMI_RANK. make_mpi_comm then checks MPI's rank and size against `info`.
    const bool under_mpi = info.launcher == "mpi" || std::getenv("OMPI_COMM_WORLD_SIZE") ||
                           std::getenv("PMIX_RANK") || std::getenv("PMI_RANK");
    if (!under_mpi)
      throw std::invalid_argument("backend mpi needs processes started by mpirun (OMPI_COMM_WORLD_SIZE is not set; "
                                  "launched via " + info.launcher + "); use backend gloo");
  }
  return b;
}

std::shared_ptr<Comm> init_comm(const RankInfo& info, const CommOptions& options) {
  if (info.world_size < 1 || info.rank < 0 || info.rank >= info.world_size)
    throw std::invalid_argument("init_comm: rank " + std::to_string(info.rank) + " of world size " +
                                std::to_string(info.world_size) + " is not a valid rank");
  if (options.rendezvous_timeout.count() <= 0 || options.collective_timeout.count() <= 0)
    throw std::invalid_argument("init_comm: timeouts must be positive");
  const std::string b = resolve_backend(info, options.backend);
  if (b == "single") return make_single_comm();
  if (b == "gloo") return detail::make_gloo_comm(info, options.rendezvous_timeout, options.collective_timeout);
  if (b == "mpi") return detail::make_mpi_comm(info, options.collective_timeout);
#ifdef FTRUN_WITH_NCCL
  if (b == "nccl") return detail::make_nccl_comm(info, options.rendezvous_timeout, options.collective_timeout);
#endif
  throw std::logic_error("init_comm: backend " + b + " is not built");
}

std::shared_ptr<Comm> init_comm(const RankInfo& info, const std::string& backend,
                                          std::chrono::milliseconds timeout) {
  CommOptions o;
  o.backend = backend;
  o.rendezvous_timeout = timeout;
  o.collective_timeout = timeout;
  return init_comm(info, o);
}

}  // namespace ftrun::comm
