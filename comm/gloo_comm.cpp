// The gloo backend: rendezvous through rank 0's c10d TCPStore, then c10d ProcessGroupGloo.
// Gloo's own timeout bounds every send and receive, so a rank that died or never arrives turns
// into an error here rather than a hang.
//
// Reduce-scatter is alltoall_base (rank r receives shard r from every rank: (n-1)/n of the
// input sent, the same as a ring reduce-scatter) plus a local sum over the received rows in
// rank order, on BOTH libtorch builds. libtorch 1.13's gloo has no reduce-scatter at all;
// 2.x's `_reduce_scatter_base` exists but is not used, by decision (issue 14), because it is
// an all-reduce in disguise: ProcessGroupGloo::reduce_scatter_tensor_coalesced clones the
// input, all-reduces ALL of it and keeps its own chunk. Measured on torch 2.11.0
// (reduce_scatter_tensor vs all_reduce vs this emulation, 2-4 ranks, crafted values whose sum
// depends on the order): (1) its result equals the all-reduce's bit for bit, so it sends
// 2(n-1)/n of the input, twice a ring reduce-scatter; (2) in fp32 with 3 or 4 ranks it sums in
// gloo's ring order, which differs per chunk from rank order, so results would not be
// bit-identical to the 1.13 build (with 2 ranks a+b == b+a and they agree); (3) it takes
// bfloat16 natively but accumulates IN bf16, rounding after every addition. The emulation
// keeps ftrun's contract on both builds: the same bytes on the wire as the ring formula of
// comm.h, fp32 sums in rank order (so both builds give the same bits: comm_test checks the
// order by hand on 4 ranks), and bf16 sums formed in fp32 from the received bf16 values and
// rounded once.
// All-gather moves bytes only, so the native form is used where it exists: 2.x's
// `_allgather_base` (flat output); 1.13 uses the list form with the output split into
// per-rank views. Both gather into gloo's own flat buffer first, so the input may be this
// rank's slice of the output.
// bf16 tensors are moved (gather, alltoall, broadcast) as float16 views of the same bytes,
// which gloo copies without arithmetic: libtorch 1.13's gloo knows no bfloat16 ("Invalid
// scalar type"), and on 2.x the same bytes travel either way. A bf16 all-reduce is the
// reduce-scatter above followed by an all-gather (the same 2(n-1)/n volume as a ring
// all-reduce); other dtypes use gloo's all-reduce.
// Asynchronous forms (all_gather_async, reduce_scatter_async) start gloo's work, which runs on
// gloo's own threads; a reduce-scatter's local sum is done in wait(), once the rows are in.
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "comm/comm_impl.h"

namespace ftrun::comm::detail {
namespace {

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }
// What gloo is handed for a tensor it only moves: bf16 as a float16 view of the same bytes.
at::Tensor movable(const at::Tensor& t) { return is_bf16(t) ? t.view(at::kHalf) : t; }

std::string endpoint_desc(const std::string& addr, int port) { return addr + ":" + std::to_string(port); }

c10::intrusive_ptr<c10d::TCPStore> open_server(const std::string& addr, int port, int world, Ms timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);  // 0: the OS picks a free one (mpirun path)
  o.isServer = true;
  o.numWorkers = static_cast<std::size_t>(world);
  // libtorch 1.13's waitForWorkers gives up silently at the timeout; the join count below
  // reports a missing rank instead.
  o.waitWorkers = false;
  o.timeout = timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(addr, o);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous: rank 0 could not open its TCPStore on port " +
                             (port ? std::to_string(port) + " (MASTER_PORT)" : std::string("<any>")) +
                             " for " + addr + ": " + short_what(e));
  }
}

// Waits (polling every 20 ms, at most `timeout`) until something listens at addr:port.
// libtorch's TCPStore client sleeps a whole second between connection attempts, which made
// every rank that started before rank 0's store cost a second; this polls faster. Errors are
// left to the TCPStore client, which reports them.
void wait_until_listening(const RankInfo& info, const std::string& addr, int port, Ms timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  NoticeClock notices;
  bool up = false;
  while (!up && std::chrono::steady_clock::now() < deadline) {
    const auto waited = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
    if (notices.due(waited))
      print_notice("rendezvous: rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) +
                   " has waited " + waited_desc(waited) + " (timeout " +
                   duration_desc(timeout) + ") for rank 0's TCPStore at " + endpoint_desc(addr, port) +
                   " (MASTER_ADDR:MASTER_PORT): nothing listens there yet; is rank 0 started?");
    int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) break;
    if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
      up = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      up = ::poll(&p, 1, 200) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    ::close(fd);
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  freeaddrinfo(res);
}

c10::intrusive_ptr<c10d::TCPStore> open_client(const RankInfo& info, const std::string& addr, int port, Ms timeout) {
  const auto start = std::chrono::steady_clock::now();
  wait_until_listening(info, addr, port, timeout);
  // The client gets what is left of the timeout (at least a moment to say why it failed).
  const auto left = timeout - std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  o.isServer = false;
  o.waitWorkers = false;
  o.timeout = std::max(left, Ms(100));
  try {
    return c10::make_intrusive<c10d::TCPStore>(addr, o);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous: rank " + std::to_string(info.rank) + " of " +
                             std::to_string(info.world_size) + " could not reach rank 0's TCPStore at " +
                             endpoint_desc(addr, port) + " within " + duration_desc(timeout) +
                             " (is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?): " + short_what(e));
  }
}

// Rank 0 waits until every rank has checked in, so that a rank that never starts is reported
// here, by count and endpoint, rather than as a key timeout deep inside gloo.
void wait_for_all(c10d::TCPStore& store, const RankInfo& info, const std::string& addr, int port, Ms timeout) {
  const std::string key = "ftrun/joined";
  // Each rank's own key too, so that rank 0's notices can name the missing ones.
  char hostbuf[256] = {0};
  const std::string host = ::gethostname(hostbuf, sizeof hostbuf - 1) == 0 ? hostbuf : "?";
  store.set("ftrun/rank/" + std::to_string(info.rank), std::vector<uint8_t>(host.begin(), host.end()));
  store.add(key, 1);
  if (info.rank != 0) return;
  const auto start = std::chrono::steady_clock::now();
  NoticeClock notices;
  while (true) {
    const int64_t joined = store.add(key, 0);
    if (joined >= info.world_size) return;
    const auto waited = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
    if (notices.due(waited)) {
      std::string missing;
      int listed = 0;
      for (int r = 1; r < info.world_size && listed < 16; ++r)
        if (!store.check({"ftrun/rank/" + std::to_string(r)})) {
          missing += std::string(listed ? ", " : "") + std::to_string(r);
          ++listed;
        }
      if (listed == 16) missing += ", ...";
      print_notice("rendezvous: rank 0 has waited " + waited_desc(waited) + " (timeout " +
                   duration_desc(timeout) + ") for the other ranks at its TCPStore " + endpoint_desc(addr, port) +
                   ": " + std::to_string(joined) + " of " + std::to_string(info.world_size) +
                   " joined; missing rank(s) " + missing);
    }
    if (std::chrono::steady_clock::now() - start > timeout)
      throw std::runtime_error("rendezvous: only " + std::to_string(joined) + " of " +
                               std::to_string(info.world_size) + " ranks reached the TCPStore at " +
                               endpoint_desc(addr, port) + " within " + duration_desc(timeout) +
                               "; the others did not start or cannot reach this address");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

c10::intrusive_ptr<c10d::Store> connect_store(const RankInfo& info, Ms timeout) {
  c10::intrusive_ptr<c10d::TCPStore> store;
  std::string addr = info.master_addr;
  int port = info.master_port;
  if (info.launcher == "mpi" && (addr.empty() || port == 0)) {
    // mpirun exports no endpoint: rank 0 opens its store (on MASTER_PORT if given, else any
    // free port, so concurrent jobs never collide) and sends address and port over MPI.
    if (addr.empty()) addr = info.local_world_size == info.world_size ? "127.0.0.1" : primary_address();
    mpi_init_once();
    const Endpoint ep = mpi_agree_endpoint(info, addr, timeout, [&] {
      store = open_server(addr, port, info.world_size, timeout);
      return static_cast<int>(store->getPort());
    });
    mpi_finalize_now();
    addr = ep.addr;
    port = ep.port;
    if (info.rank != 0) store = open_client(info, addr, port, timeout);
  } else {
    if (addr.empty() || port <= 0)
      throw std::invalid_argument("rendezvous: rank " + std::to_string(info.rank) +
                                  " has no master address/port (MASTER_ADDR, MASTER_PORT)");
    store = info.rank == 0 ? open_server(addr, port, info.world_size, timeout) : open_client(info, addr, port, timeout);
  }
  wait_for_all(*store, info, addr, port, timeout);
  return store;
}

namespace {

// Notices for a collective that waits long (issue 16). The communicating thread marks each
// collective's start and end (a lock and a few stores, nothing else); one thread per Comm
// watches, and when a collective has waited a moment it posts "ftrun/wait/<rank>" = its
// sequence number to the store, and at each notice reads the others' posts: a rank that has
// not posted the same sequence number has not arrived (collectives are issued in the same
// order on every rank, so the numbers match).
class CollectiveWatch {
 public:
  CollectiveWatch(c10::intrusive_ptr<c10d::Store> store, int rank, int world, Ms timeout)
      : store_(std::move(store)), rank_(rank), n_(world), timeout_(timeout) {
    thread_ = std::thread([this] { loop(); });
  }
  ~CollectiveWatch() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void begin(const char* op, const at::Tensor& t) {
    std::lock_guard<std::mutex> lk(m_);
    ++seq_;
    op_ = op;
    numel_ = t.defined() ? t.numel() : -1;
    dtype_ = t.defined() ? t.scalar_type() : at::kFloat;
    started_ = std::chrono::steady_clock::now();
    active_ = true;
  }
  void end() {
    std::lock_guard<std::mutex> lk(m_);
    active_ = false;
  }

 private:
  void loop() {
    const NoticeTimes times = notice_times();
    const Ms tick = std::clamp(std::min(times.first, times.every) / 4, Ms(10), Ms(1000));
    const Ms post_after = std::min(times.first / 2, Ms(1000));
    uint64_t seen = 0;
    bool posted = false;
    NoticeClock clock;
    std::unique_lock<std::mutex> lk(m_);
    while (!stop_) {
      cv_.wait_for(lk, tick);
      if (stop_ || !active_) continue;
      if (seq_ != seen) {
        seen = seq_;
        posted = false;
        clock = NoticeClock();
      }
      const auto elapsed = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - started_);
      const bool post = !posted && elapsed >= post_after;
      const bool notice = clock.due(elapsed);
      if (!post && !notice) continue;
      const uint64_t seq = seq_;
      const std::string op = op_;
      const std::string desc = numel_ < 0 ? "" : " (" + std::string(c10::toString(dtype_)) + " tensor of " +
                                                      std::to_string(numel_) + " elements)";
      lk.unlock();
      try {
        if (post) {
          const std::string v = std::to_string(seq);
          store_->set("ftrun/wait/" + std::to_string(rank_), std::vector<uint8_t>(v.begin(), v.end()));
          posted = true;
        }
        if (notice)
          print_notice("rank " + std::to_string(rank_) + " of " + std::to_string(n_) + " has waited " +
                       waited_desc(elapsed) + " (collective_timeout " +
                       duration_desc(timeout_) + ") in gloo " + op + " #" + std::to_string(seq) + desc +
                       missing(seq));
      } catch (...) {
        // A notice is a courtesy: the collective's own timeout reports the failure.
      }
      lk.lock();
    }
  }

  // "; not arrived: rank(s) 1, 3" from the others' posts; what is known when the store fails.
  std::string missing(uint64_t seq) {
    std::string out;
    int listed = 0;
    try {
      for (int r = 0; r < n_ && listed < 16; ++r) {
        if (r == rank_) continue;
        const std::string key = "ftrun/wait/" + std::to_string(r);
        bool there = false;
        if (store_->check({key})) {
          const auto v = store_->get(key);
          there = std::string(v.begin(), v.end()) == std::to_string(seq);
        }
        if (!there) out += std::string(listed++ ? ", " : "") + std::to_string(r);
      }
    } catch (const std::exception& e) {
      return "; cannot ask rank 0's TCPStore who is missing (" + short_what(e) + ")";
    }
    if (out.empty()) return "; every rank has arrived";
    return "; not arrived: rank(s) " + out + (listed == 16 ? ", ..." : "");
  }

  c10::intrusive_ptr<c10d::Store> store_;
  const int rank_, n_;
  const Ms timeout_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false, active_ = false;
  uint64_t seq_ = 0;
  const char* op_ = "";
  int64_t numel_ = -1;
  at::ScalarType dtype_ = at::kFloat;
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

class GlooComm : public Comm {
 public:
  GlooComm(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, c10::intrusive_ptr<c10d::Store> store, int rank, int world,
           Ms timeout)
      : pg_(std::move(pg)), rank_(rank), n_(world), timeout_(timeout),
        watch_(std::make_unique<CollectiveWatch>(std::move(store), rank, world, timeout)) {}

  int rank() const override { return rank_; }
  int world_size() const override { return n_; }
  std::string backend() const override { return "gloo"; }

  void all_reduce_sum(at::Tensor& t) override {
    check_dense("gloo", "all_reduce", t);
    if (t.numel() > 0 && is_bf16(t)) {
      // Padded to n equal shards: reduce-scatter, then all-gather the summed shards.
      const int64_t m = t.numel(), padded = (m + n_ - 1) / n_ * n_;
      auto full = at::zeros({padded}, t.options());
      full.narrow(0, 0, m).copy_(t.view({-1}));
      auto shard = at::empty({padded / n_}, t.options());
      reduce_scatter_into(full, shard);
      gather_into(shard, full);
      t.view({-1}).copy_(full.narrow(0, 0, m));
    } else if (t.numel() > 0) {
      std::vector<at::Tensor> v{t};
      run("all_reduce", t, [&] { return pg_->allreduce(v); });
    }
    count("all_reduce", all_reduce_bytes(nbytes(t), n_));
  }

  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    check_reduce_scatter("gloo", input, output, n_);
    if (input.numel() > 0) reduce_scatter_into(input, output);
    count("reduce_scatter", share_bytes(nbytes(input), n_));
  }

  std::unique_ptr<Pending> reduce_scatter_async(const at::Tensor& input, at::Tensor& output) override {
    check_reduce_scatter("gloo", input, output, n_);
    count("reduce_scatter", share_bytes(nbytes(input), n_));
    auto p = scatter_work(input, output);
    if (input.numel() > 0) p->work = p->start();
    return p;
  }

  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    check_all_gather("gloo", input, output, n_);
    if (input.numel() > 0) gather_into(input, output);
    count("all_gather", share_bytes(nbytes(output), n_));
  }

  std::unique_ptr<Pending> all_gather_async(const at::Tensor& input, at::Tensor& output) override {
    check_all_gather("gloo", input, output, n_);
    count("all_gather", share_bytes(nbytes(output), n_));
    auto p = gather_work(input, output);
    if (input.numel() > 0) p->work = p->start();
    return p;
  }

  void broadcast(at::Tensor& t, int root) override {
    check_dense("gloo", "broadcast", t);
    check_root("gloo", root, n_);
    if (t.numel() > 0) {
      std::vector<at::Tensor> v{movable(t)};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      run("broadcast", t, [&] { return pg_->broadcast(v, o); });
    }
    count("broadcast", rank_ == root ? nbytes(t) : 0);
  }

  void barrier() override {
    const at::Tensor none;
    run("barrier", none, [&] { return pg_->barrier(); });
  }

 private:
  // The collectives without their byte accounting (a bf16 all-reduce is made of both). Each
  // is a handle that owns what gloo reads and writes until it completes; the synchronous
  // forms start it inside run() (so errors at start read like errors in flight) and finish.
  struct GlooPending : Pending {
    GlooComm* comm = nullptr;
    const char* op = "";
    at::Tensor desc;  // the caller's tensor, for error messages and notices
    c10::intrusive_ptr<c10d::Work> work;
    void wait() override {
      if (!work) return;
      auto w = std::move(work);
      comm->run(op, desc, [&] { return w; });
      finish();
    }
    virtual c10::intrusive_ptr<c10d::Work> start() = 0;
    virtual void finish() {}
  };

  // Reduce-scatter: the alltoall (1-D, because alltoall_base splits dimension 0 into n equal
  // parts) delivers rank j's copy of this rank's shard as row j of `recv`; finish() sums the
  // rows in rank order into the output. The sum is formed before anything is written, so an
  // output that aliases the input is safe, sync or async. bf16 is summed in fp32, rounded once.
  struct ScatterWork : GlooPending {
    at::Tensor in, recv, output;
    int n = 0;
    c10::intrusive_ptr<c10d::Work> start() override {
      std::vector<int64_t> equal_split;  // empty = equal parts
      at::Tensor send_w = movable(in), recv_w = movable(recv);
      return comm->pg_->alltoall_base(recv_w, send_w, equal_split, equal_split);
    }
    void finish() override {
      const auto acc = is_bf16(in) ? at::kFloat : in.scalar_type();
      output.view({-1}).copy_(recv.view({n, -1}).sum(0, false, acc));
    }
  };
  std::unique_ptr<ScatterWork> scatter_work(const at::Tensor& input, at::Tensor& output) {
    auto p = std::make_unique<ScatterWork>();
    p->comm = this;
    p->op = "reduce_scatter";
    p->desc = input;
    p->n = n_;
    p->output = output;
    if (input.numel() > 0) {
      p->in = input.reshape({-1});
      p->recv = at::empty_like(p->in);
    }
    return p;
  }
  void reduce_scatter_into(const at::Tensor& input, at::Tensor& output) {
    auto p = scatter_work(input, output);
    run("reduce_scatter", input, [&] { return p->start(); });
    p->finish();
  }

  // All-gather: gloo gathers into its own flat buffer and then copies into the output, so the
  // input may itself be this rank's slice of the output (the usual ZeRO layout).
  struct GatherWork : GlooPending {
    at::Tensor in, out;
    int n = 0;
    c10::intrusive_ptr<c10d::Work> start() override {
#if TORCH_VERSION_MAJOR >= 2
      return comm->pg_->_allgather_base(out, in);
#else
      std::vector<at::Tensor> ins{in};
      std::vector<std::vector<at::Tensor>> outs{out.chunk(n)};
      return comm->pg_->allgather(outs, ins);
#endif
    }
  };
  std::unique_ptr<GatherWork> gather_work(const at::Tensor& input, at::Tensor& output) {
    auto p = std::make_unique<GatherWork>();
    p->comm = this;
    p->op = "all_gather";
    p->desc = input;
    p->n = n_;
    if (input.numel() > 0) {
      p->in = movable(input.reshape({-1}));
      p->out = movable(output.view({-1}));
    }
    return p;
  }
  void gather_into(const at::Tensor& input, at::Tensor& output) {
    auto p = gather_work(input, output);
    run("all_gather", input, [&] { return p->start(); });
  }

  template <class F>
  void run(const char* op, const at::Tensor& t, F&& start) {
    watch_->begin(op, t);
    struct End {
      CollectiveWatch& w;
      ~End() { w.end(); }
    } end{*watch_};
    try {
      start()->wait();
    } catch (const std::exception& e) {
      const std::string what = short_what(e);
      std::string hint;
      if (what.find("Timed out") != std::string::npos || what.find("timed out") != std::string::npos)
        hint = "; a rank did not join this collective within the timeout";
      else if (what.find("closed") != std::string::npos || what.find("reset") != std::string::npos)
        hint = "; another rank exited or crashed";
      throw std::runtime_error("gloo " + std::string(op) + " failed on rank " + std::to_string(rank_) + " of " +
                               std::to_string(n_) + (t.defined() ? " (" + tensor_desc(t) + ")" : std::string()) +
                               ", timeout " + duration_desc(timeout_) + hint + ": " + what);
    }
  }

  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  int rank_, n_;
  Ms timeout_;
  std::unique_ptr<CollectiveWatch> watch_;  // destroyed first: its thread uses the store
};

std::shared_ptr<::gloo::transport::Device> make_device(const RankInfo& info) {
  // GLOO_SOCKET_IFNAME is PyTorch's knob for the interface to use across nodes.
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    std::string first(ifname);
    first = first.substr(0, first.find(','));
    return c10d::ProcessGroupGloo::createDeviceForInterface(first);
  }
  // All ranks on this machine: loopback needs no name resolution.
  if (info.local_world_size == info.world_size || is_loopback(info.master_addr))
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  // Across nodes, not createDefaultDevice(): it binds to whatever the hostname resolves to,
  // which on Debian-style /etc/hosts is 127.0.1.1 and unreachable from other nodes; the
  // address on the route to rank 0 is one every node can reach.
  return c10d::ProcessGroupGloo::createDeviceForHostname(address_toward(info.master_addr));
}

}  // namespace

std::shared_ptr<Comm> make_gloo_comm(const RankInfo& info, Ms rendezvous_timeout, Ms collective_timeout) {
  auto store = connect_store(info, rendezvous_timeout);
  auto opts = c10d::ProcessGroupGloo::Options::create(collective_timeout);
  opts->devices.push_back(make_device(info));
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  try {
    // Each rank connects to every other here; say so when it takes long (a peer that joined
    // the store but has not reached this point, or an unreachable interface).
    WaitWatch watch([&](Ms waited) {
      return "gloo: rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) + " has waited " +
             waited_desc(waited) + " (timeout " + duration_desc(collective_timeout) +
             ") connecting to its peers through " +
             (info.master_addr.empty() ? std::string("rank 0's TCPStore") : "the TCPStore at " + endpoint_desc(info.master_addr, info.master_port)) +
             " (" + std::to_string(store->add("ftrun/joined", 0)) + " of " + std::to_string(info.world_size) +
             " ranks joined)";
    });
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, info.rank, info.world_size, opts);
  } catch (const std::exception& e) {
    throw std::runtime_error("gloo: rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) +
                             " could not connect to its peers within " + duration_desc(collective_timeout) + ": " +
                             short_what(e));
  }
  return std::make_shared<GlooComm>(std::move(pg), store, info.rank, info.world_size, collective_timeout);
}

}  // namespace ftrun::comm::detail
