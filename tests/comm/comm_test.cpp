// The Comm backends for real: 2 and 4 processes over gloo (torchrun-style env from the launch
// helper), and 2 processes under mpirun with backend mpi and with gloo-under-mpirun. Inputs
// are built from the rank so every expected value has a closed form, and the bytes counted
// must equal the ring formulas of comm/comm.h. Failure tests check that an unreachable
// master, a missing rank, a rank that throws and a rank that never joins all end in errors
// naming the address or operation within the timeout, never in a hang. The asynchronous
// reduce-scatter is checked against the synchronous one and hand-computed sums.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "comm/rendezvous.h"
#include "testing/ranks.h"

using namespace std::chrono_literals;
using ftrun::comm::CommOptions;
using ftrun::comm::detect_rank_info;
using ftrun::comm::init_comm;
using ftrun::comm::RankInfo;
using ftrun::comm::Comm;
using ftrun::testing::LaunchOptions;
using ftrun::testing::run_in_ranks;
using ftrun::testing::run_wrapped;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

LaunchOptions within(std::chrono::seconds s) {
  LaunchOptions o;
  o.timeout = s;
  return o;
}

// The ring volumes of comm/comm.h, written out again here so the test does not trust the
// implementation's helper.
uint64_t ar_bytes(uint64_t s, int n) { return s * 2 * (n - 1) / n; }
uint64_t share(uint64_t s, int n) { return s * (n - 1) / n; }

void expect_equal(const at::Tensor& got, const at::Tensor& want, const char* what) {
  EXPECT_TRUE(at::equal(got, want)) << what << "\ngot:\n" << got << "\nwant:\n" << want;
}

// Every collective with rank-dependent inputs whose result is known in closed form, in
// several dtypes, plus aliasing layouts the ZeRO engine uses; then the byte accounting.
void check_collectives(Comm& comm) {
  const int n = comm.world_size(), r = comm.rank();
  const double tri = n * (n + 1) / 2.0;  // sum over ranks of (rank + 1)
  comm.reset_stats();
  uint64_t ar = 0, rs = 0, ag = 0, bc = 0;

  // all_reduce: x_r = (r + 1) * v  ->  sum = n(n+1)/2 * v
  auto f = at::arange(1, 11, at::kFloat) * float(r + 1);
  comm.all_reduce_sum(f);
  expect_equal(f, at::arange(1, 11, at::kFloat) * float(tri), "all_reduce float32");
  ar += ar_bytes(10 * 4, n);
  auto d = at::full({3, 4}, 0.5 * (r + 1), at::kDouble);
  comm.all_reduce_sum(d);
  expect_equal(d, at::full({3, 4}, 0.5 * tri, at::kDouble), "all_reduce float64 (2-D)");
  ar += ar_bytes(12 * 8, n);
  auto l = at::arange(0, 6, at::kLong) + 1000 * r;  // sum = n*i + 1000 * n(n-1)/2
  comm.all_reduce_sum(l);
  expect_equal(l, at::arange(0, 6, at::kLong) * n + 1000 * (n * (n - 1) / 2), "all_reduce int64");
  ar += ar_bytes(6 * 8, n);

  // reduce_scatter: element j of rank q's input = (q + 1) * j  ->  shard r = tri * [r*k, (r+1)*k)
  const int64_t k = 3;
  auto in = at::arange(0, n * k, at::kFloat) * float(r + 1);
  auto out = at::empty({k}, at::kFloat);
  comm.reduce_scatter_sum(in, out);
  expect_equal(out, at::arange(r * k, (r + 1) * k, at::kFloat) * float(tri), "reduce_scatter float32");
  rs += share(uint64_t(n * k) * 4, n);
  // In place: the output is this rank's own slice of the input (how ZeRO-2 keeps its grad shard).
  auto in2 = at::arange(0, n * k, at::kLong) + 7 * r;  // sum over q of (j + 7q) = n*j + 7 n(n-1)/2
  auto mine = in2.narrow(0, r * k, k);
  comm.reduce_scatter_sum(in2, mine);
  expect_equal(mine, at::arange(r * k, (r + 1) * k, at::kLong) * n + 7 * (n * (n - 1) / 2), "reduce_scatter in place");
  rs += share(uint64_t(n * k) * 8, n);

  // all_gather: rank q contributes 100q + [0, 4)
  auto g_in = at::arange(0, 4, at::kFloat) + 100.f * r;
  auto g_out = at::empty({n * 4}, at::kFloat);
  comm.all_gather(g_in, g_out);
  expect_equal(g_out, (at::arange(0, n, at::kFloat).unsqueeze(1) * 100 + at::arange(0, 4, at::kFloat)).reshape({-1}),
               "all_gather float32");
  ag += share(uint64_t(n * 4) * 4, n);
  // In place: the input is this rank's row of a 2-D output (ZeRO-3's flat parameter buffer).
  auto full = at::zeros({n, 2}, at::kDouble);
  full[r].fill_(r + 0.25);
  auto row = full[r];
  comm.all_gather(row, full);
  expect_equal(full, (at::arange(0, n, at::kDouble) + 0.25).unsqueeze(1).expand({n, 2}), "all_gather in place");
  ag += share(uint64_t(n * 2) * 8, n);

  // broadcast from the last rank
  const int root = n - 1;
  auto b = r == root ? at::arange(0, 5, at::kFloat) * 3 : at::zeros({5}, at::kFloat);
  comm.broadcast(b, root);
  expect_equal(b, at::arange(0, 5, at::kFloat) * 3, "broadcast");
  bc += r == root ? 5 * 4 : 0;

  comm.barrier();

  const auto& st = comm.stats();
  auto by = [&](const char* op) { return st.bytes_by_op.count(op) ? st.bytes_by_op.at(op) : uint64_t(0); };
  auto calls = [&](const char* op) { return st.calls_by_op.count(op) ? st.calls_by_op.at(op) : uint64_t(0); };
  EXPECT_EQ(by("all_reduce"), ar);
  EXPECT_EQ(by("reduce_scatter"), rs);
  EXPECT_EQ(by("all_gather"), ag);
  EXPECT_EQ(by("broadcast"), bc);
  EXPECT_EQ(st.bytes_sent, ar + rs + ag + bc);
  EXPECT_EQ(calls("all_reduce"), 3u);
  EXPECT_EQ(calls("reduce_scatter"), 2u);
  EXPECT_EQ(calls("all_gather"), 2u);
  EXPECT_EQ(calls("broadcast"), 1u);
  // Spot-check one formula by hand: 10 floats all-reduced over 2 ranks send 40 bytes; over 4, 60.
  if (n == 2) {
    EXPECT_EQ(ar_bytes(40, 2), 40u);
  } else if (n == 4) {
    EXPECT_EQ(ar_bytes(40, 4), 60u);
  }
}

// bfloat16 (the ZeRO engine's working weights and gradients in DeepSpeed's bf16 mode): every
// collective moves and sums it, with 2 bytes per element on the wire. Values are small
// integers and exact binary fractions, so bf16 sums are exact and comparable with ==.
void check_bf16_collectives(Comm& comm) {
  const int n = comm.world_size(), r = comm.rank();
  const int tri = n * (n + 1) / 2;
  const auto before = comm.stats();
  auto bf = [](const at::Tensor& t) { return t.to(at::kBFloat16); };
  // all_reduce: 11 elements (not a multiple of n: gloo pads its internal reduce-scatter).
  auto a = bf(at::arange(1, 12, at::kFloat) * float(r + 1));
  comm.all_reduce_sum(a);
  EXPECT_EQ(a.scalar_type(), at::kBFloat16);
  expect_equal(a, bf(at::arange(1, 12, at::kFloat) * float(tri)), "all_reduce bfloat16");
  // reduce_scatter: rank q's element j = (q + 1) * j / 4 (exact in bf16)
  const int64_t k = 3;
  auto in = bf(at::arange(0, n * k, at::kFloat) * float(r + 1) * 0.25f);
  auto out = at::empty({k}, at::kBFloat16);
  comm.reduce_scatter_sum(in, out);
  expect_equal(out, bf(at::arange(r * k, (r + 1) * k, at::kFloat) * float(tri) * 0.25f), "reduce_scatter bfloat16");
  // all_gather in place (ZeRO-3's bf16 flat): rank q's slice holds q + 0.5; values like 1e30
  // whose bits are not valid float16 finite numbers travel unchanged (gloo moves bytes).
  auto full = at::zeros({n * 2}, at::kBFloat16);
  full.narrow(0, r * 2, 2).copy_(bf(at::tensor({float(r) + 0.5f, 1e30f})));
  auto mine = full.narrow(0, r * 2, 2);
  comm.all_gather(mine, full);
  for (int q = 0; q < n; ++q)
    expect_equal(full.narrow(0, q * 2, 2), bf(at::tensor({float(q) + 0.5f, 1e30f})), "all_gather bfloat16");
  auto async_in = bf(at::full({2}, float(r) + 2.0f));
  auto async_out = at::empty({n * 2}, at::kBFloat16);
  comm.all_gather_async(async_in, async_out)->wait();
  for (int q = 0; q < n; ++q) expect_equal(async_out.narrow(0, q * 2, 2), bf(at::full({2}, float(q) + 2.0f)), "all_gather_async bfloat16");
  auto b = r == 0 ? bf(at::arange(0, 5, at::kFloat) * 3) : at::zeros({5}, at::kBFloat16);
  comm.broadcast(b, 0);
  expect_equal(b, bf(at::arange(0, 5, at::kFloat) * 3), "broadcast bfloat16");
  // 2 bytes per element in every formula.
  const auto& st = comm.stats();
  auto delta = [&](const char* op) {
    auto get = [&](const ftrun::comm::CommStats& s) { return s.bytes_by_op.count(op) ? s.bytes_by_op.at(op) : uint64_t(0); };
    return get(st) - get(before);
  };
  EXPECT_EQ(delta("all_reduce"), ar_bytes(11 * 2, n));
  EXPECT_EQ(delta("reduce_scatter"), share(uint64_t(n * k) * 2, n));
  EXPECT_EQ(delta("all_gather"), 2 * share(uint64_t(n * 2) * 2, n));
  EXPECT_EQ(delta("broadcast"), r == 0 ? 5u * 2 : 0u);
}

// reduce_scatter_async (issue 14: ZeRO-2/3 start a finished unit's gradient reduce-scatter and
// wait for it during the next unit's backward). It must give the synchronous result bit for
// bit and the documented sums: fp32 added in rank order ((x_0 + x_1) + x_2) + ..., computed here
// by hand from every rank's (deterministic) input; bf16 summed in fp32 and rounded once.
void check_async_reduce_scatter(Comm& comm) {
  const int n = comm.world_size(), r = comm.rank();
  const int64_t k = 5;
  const auto before = comm.stats();
  // Rank q's input: values whose fp32 sum depends on the order of the additions.
  auto input_of = [&](int q) {
    auto j = at::arange(0, n * k, at::kDouble);
    return ((j * 0.37 + q).sin() * std::pow(10.0, q % 3) + 1.0 / (q + 3)).to(at::kFloat);
  };
  at::Tensor want = input_of(0).narrow(0, r * k, k).clone();
  for (int q = 1; q < n; ++q) want = want + input_of(q).narrow(0, r * k, k);  // fp32, rank order
  auto in = input_of(r);
  auto sync_out = at::empty({k}, at::kFloat);
  comm.reduce_scatter_sum(in, sync_out);
  auto async_out = at::full({k}, -1.f);
  auto p = comm.reduce_scatter_async(in, async_out);
  // Another collective in flight at the same time (ZeRO-3's prefetch all-gather) and a
  // synchronous one issued before either is waited for.
  auto g_in = at::full({2}, float(r) + 0.5f);
  auto g_out = at::empty({n * 2}, at::kFloat);
  auto pg = comm.all_gather_async(g_in, g_out);
  auto t = at::ones({3}, at::kDouble);
  comm.all_reduce_sum(t);
  pg->wait();
  p->wait();
  p->wait();  // a second wait is a no-op
  expect_equal(async_out, sync_out, "reduce_scatter_async == reduce_scatter_sum (float32)");
  expect_equal(async_out, want, "reduce_scatter_async float32 == rank-order sum");
  expect_equal(t, at::full({3}, double(n), at::kDouble), "all_reduce while a reduce-scatter is in flight");
  for (int q = 0; q < n; ++q) expect_equal(g_out.narrow(0, q * 2, 2), at::full({2}, float(q) + 0.5f), "all_gather_async beside it");

  // In place, as ZeRO-2 keeps its shard: the output is this rank's slice of the input.
  auto in2 = input_of(r);
  auto mine = in2.narrow(0, r * k, k);
  comm.reduce_scatter_async(in2, mine)->wait();
  expect_equal(mine, want, "reduce_scatter_async in place");

  // bf16: element j holds 1 on rank j % n and 2^-8 (half a bf16 ulp of 1) on the others. The
  // fp32 sum 1 + (n-1) 2^-8 is exact; rounded once to bf16 it is 1 for n = 2 (a tie, to even),
  // 1 + 2^-7 for n = 3 and 1 + 2^-6 for n = 4 (a tie, to even). Accumulating in bf16 instead
  // would lose every 2^-8 added to a running 1 (the elements whose 1 is on rank 0 would stay 1).
  auto bf_in_of = [&](int q) {
    auto j = at::arange(0, n * k, at::kLong);
    return at::where(j.remainder(n) == q, at::ones({n * k}), at::full({n * k}, 1.0f / 256)).to(at::kBFloat16);
  };
  const float exact = 1.0f + float(n - 1) / 256;
  const float rounded = n == 2 ? 1.0f : n == 3 ? 1.0f + 1.0f / 128 : n == 4 ? 1.0f + 1.0f / 64 : -1.0f;
  ASSERT_GT(rounded, 0.f) << "add the hand-rounded value for " << n << " ranks";
  EXPECT_EQ(at::tensor({exact}).to(at::kBFloat16).item<float>(), rounded);  // the hand rounding
  auto bf_want = at::full({k}, rounded).to(at::kBFloat16);
  auto bf_in = bf_in_of(r);
  auto bf_sync = at::empty({k}, at::kBFloat16);
  comm.reduce_scatter_sum(bf_in, bf_sync);
  auto bf_async = at::empty({k}, at::kBFloat16);
  comm.reduce_scatter_async(bf_in, bf_async)->wait();
  expect_equal(bf_async, bf_sync, "reduce_scatter_async == reduce_scatter_sum (bfloat16)");
  expect_equal(bf_async, bf_want, "reduce_scatter_async bfloat16: fp32 sum rounded once");
  auto bf_in2 = bf_in_of(r);
  auto bf_mine = bf_in2.narrow(0, r * k, k);
  comm.reduce_scatter_async(bf_in2, bf_mine)->wait();
  expect_equal(bf_mine, bf_want, "reduce_scatter_async bfloat16 in place");

  // The bytes are those of the synchronous form: (n-1)/n of the input, per call.
  const auto& st = comm.stats();
  auto delta = [&](const char* op) {
    auto get = [&](const ftrun::comm::CommStats& s) { return s.bytes_by_op.count(op) ? s.bytes_by_op.at(op) : uint64_t(0); };
    return get(st) - get(before);
  };
  auto calls = [&](const char* op) {
    auto get = [&](const ftrun::comm::CommStats& s) { return s.calls_by_op.count(op) ? s.calls_by_op.at(op) : uint64_t(0); };
    return get(st) - get(before);
  };
  EXPECT_EQ(delta("reduce_scatter"), 3 * share(uint64_t(n * k) * 4, n) + 3 * share(uint64_t(n * k) * 2, n));
  EXPECT_EQ(calls("reduce_scatter"), 6u);
  EXPECT_EQ(delta("all_gather"), share(uint64_t(n * 2) * 4, n));
}

// Bad arguments are rejected locally, before any rank communicates, naming the operation;
// every rank makes the same bad call, so nobody is left waiting.
void check_argument_errors(Comm& comm) {
  const int n = comm.world_size();
  auto expect_invalid = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << part << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_TRUE(contains(e.what(), part)) << e.what();
    }
  };
  auto in = at::zeros({n * 3 + 1});
  auto out = at::zeros({3});
  expect_invalid([&] { comm.reduce_scatter_sum(in, out); }, "reduce_scatter");
  auto g = at::zeros({n * 2});
  auto small = at::zeros({3});
  expect_invalid([&] { comm.all_gather(small, g); }, "all_gather");
  auto strided = at::zeros({4, 4}).t();
  expect_invalid([&] { comm.all_reduce_sum(strided); }, "contiguous");
  auto t = at::zeros({2});
  expect_invalid([&] { comm.broadcast(t, n); }, "root");
  auto dbl = at::zeros({n}, at::kDouble);
  auto flt = at::zeros({1}, at::kFloat);
  expect_invalid([&] { comm.reduce_scatter_sum(dbl, flt); }, "reduce_scatter");
}

std::vector<std::string> mpirun(int np) {
  return {FTRUN_MPIRUN, "-np", std::to_string(np), "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"};
}

}  // namespace

// ---------------------------------------------------------------- in one process

TEST(Comm, WorldOfOneIsTheSingleComm) {
  RankInfo one;
  for (const char* b : {"auto", "gloo", "mpi"}) {
    auto comm = init_comm(one, b);
    EXPECT_EQ(comm->backend(), "single") << b;
    EXPECT_EQ(comm->world_size(), 1);
  }
}

// The world of one's asynchronous reduce-scatter is the synchronous identity, finished at once.
TEST(Comm, WorldOfOneAsyncReduceScatter) {
  auto comm = ftrun::comm::make_single_comm();
  auto in = at::arange(0, 6, at::kFloat) * 0.5f;
  auto out = at::zeros({6});
  auto p = comm->reduce_scatter_async(in, out);
  expect_equal(out, in, "single reduce_scatter_async");  // done before wait()
  p->wait();
  EXPECT_EQ(comm->stats().calls_by_op.at("reduce_scatter"), 1u);
  EXPECT_EQ(comm->stats().bytes_sent, 0u);
}

TEST(Comm, BackendChoice) {
  RankInfo two;
  two.world_size = 2;
  two.local_world_size = 2;
  two.launcher = "torchrun";
  two.master_addr = "127.0.0.1";
  two.master_port = 29500;
  EXPECT_EQ(ftrun::comm::resolve_backend(two, "auto"), "gloo");  // CPU build: never nccl, never mpi unasked
  EXPECT_EQ(ftrun::comm::resolve_backend(two, "GLOO"), "gloo");
  EXPECT_EQ(ftrun::comm::resolve_backend(RankInfo{}, "gloo"), "single");
  auto error_of = [&](const std::string& b) {
    try {
      ftrun::comm::resolve_backend(two, b);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_TRUE(contains(error_of("tcp"), "unknown distributed backend 'tcp'")) << error_of("tcp");
  // The CPU build has no nccl; the CUDA flavour run on a CPU machine has no GPU for it.
  if (!ftrun::comm::nccl_compiled())
    EXPECT_TRUE(contains(error_of("nccl"), "needs a CUDA build of libtorch")) << error_of("nccl");
  else
    EXPECT_TRUE(contains(error_of("nccl"), "no CUDA GPU is usable here")) << error_of("nccl");
  ASSERT_EQ(std::getenv("OMPI_COMM_WORLD_SIZE"), nullptr) << "run this test outside mpirun";
  EXPECT_TRUE(contains(error_of("mpi"), "mpirun")) << error_of("mpi");
  EXPECT_THROW(init_comm(two, "nccl"), std::invalid_argument);
}

TEST(GlooRendezvous, UnreachableMasterIsAnErrorNamingTheAddress) {
  RankInfo info;
  info.rank = 1;
  info.world_size = 2;
  info.local_rank = 1;
  info.local_world_size = 2;
  info.launcher = "torchrun";
  info.master_addr = "127.0.0.1";
  info.master_port = ftrun::testing::free_port();  // nothing listens there
  const std::string where = "127.0.0.1:" + std::to_string(info.master_port);
  const auto t0 = Clock::now();
  try {
    init_comm(info, "gloo", 2s);
    ADD_FAILURE() << "init_comm reached a master that does not exist";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), where)) << e.what();
    EXPECT_TRUE(contains(e.what(), "rank 1 of 2")) << e.what();
    EXPECT_TRUE(contains(e.what(), "within 2 s")) << e.what();
  }
  EXPECT_LT(since(t0), 2 + 8.0);  // the timeout plus slack for a loaded machine, not a hang
}

TEST(GlooRendezvous, RankZeroReportsRanksThatNeverJoin) {
  RankInfo info;
  info.world_size = 3;
  info.local_world_size = 3;
  info.launcher = "torchrun";
  info.master_addr = "127.0.0.1";
  info.master_port = ftrun::testing::free_port();
  const auto t0 = Clock::now();
  try {
    init_comm(info, "gloo", 2s);
    ADD_FAILURE() << "init_comm returned without the other ranks";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "only 1 of 3 ranks reached the TCPStore at 127.0.0.1:" +
                                       std::to_string(info.master_port)))
        << e.what();
  }
  const double s = since(t0);
  EXPECT_GT(s, 1.5);  // it did wait for them
  EXPECT_LT(s, 2 + 8.0);
}

// ---------------------------------------------------------------- gloo, torchrun-style env

TEST(GlooComm, CollectivesTwoRanks) {
  auto r = run_in_ranks(2, [] {
    const RankInfo info = detect_rank_info();
    ASSERT_EQ(info.launcher, "torchrun");
    ASSERT_EQ(info.world_size, 2);
    auto comm = init_comm(info, "gloo", 60s);
    EXPECT_EQ(comm->backend(), "gloo");
    EXPECT_EQ(comm->rank(), info.rank);
    check_collectives(*comm);
    check_bf16_collectives(*comm);
    check_async_reduce_scatter(*comm);
    check_argument_errors(*comm);
    // The group still works after rejected calls.
    auto t = at::ones({3});
    comm->all_reduce_sum(t);
    expect_equal(t, at::full({3}, 2.f), "all_reduce after argument errors");
  }, within(120s));
  EXPECT_TRUE(r.ok()) << r.report();
}

TEST(GlooComm, CollectivesFourRanks) {
  auto r = run_in_ranks(4, [] {
    const RankInfo info = detect_rank_info();
    ASSERT_EQ(info.world_size, 4);
    auto comm = init_comm(info, "gloo", 60s);
    check_collectives(*comm);
    check_bf16_collectives(*comm);
    check_async_reduce_scatter(*comm);
  }, within(150s));
  EXPECT_TRUE(r.ok()) << r.report();
}

TEST(GlooFailure, RankThatThrowsMakesTheOthersFail) {
  auto r = run_in_ranks(3, [] {
    CommOptions o;
    o.backend = "gloo";
    o.rendezvous_timeout = 60s;  // starting three processes on a busy machine takes a while
    o.collective_timeout = 3s;
    auto comm = init_comm(detect_rank_info(), o);
    auto t = at::ones({8});
    comm->all_reduce_sum(t);  // the group works while everyone is there
    if (comm->rank() == 1) throw std::runtime_error("rank 1 gives up before the second all_reduce");
    const auto t0 = Clock::now();
    try {
      comm->all_reduce_sum(t);
      ADD_FAILURE() << "all_reduce completed without rank 1";
    } catch (const std::runtime_error& e) {
      EXPECT_TRUE(contains(e.what(), "gloo all_reduce failed on rank " + std::to_string(comm->rank()) + " of 3"))
          << e.what();
      std::fprintf(stderr, "rank %d got: %s\n", comm->rank(), e.what());
    }
    EXPECT_LT(since(t0), 3 + 6.0);
  }, within(90s));
  ASSERT_EQ(r.children.size(), 3u);
  EXPECT_FALSE(r.timed_out) << r.report();
  EXPECT_EQ(r.children[1].exit_code, 3) << r.report();  // the uncaught exception
  EXPECT_TRUE(contains(r.children[1].err, "rank 1 gives up")) << r.report();
  for (int i : {0, 2}) {
    EXPECT_EQ(r.children[i].exit_code, 0) << r.report();  // its own checks passed
    EXPECT_TRUE(contains(r.children[i].err, "got: gloo all_reduce failed")) << r.report();
  }
}

TEST(GlooFailure, RankThatNeverJoinsTimesOutNamingTheOperation) {
  auto r = run_in_ranks(2, [] {
    CommOptions o;
    o.backend = "gloo";
    o.rendezvous_timeout = 60s;
    o.collective_timeout = 3s;
    auto comm = init_comm(detect_rank_info(), o);
    if (comm->rank() == 1) {  // alive, connected, but never calls the collective
      std::this_thread::sleep_for(9s);
      return;
    }
    auto t = at::ones({8});
    const auto t0 = Clock::now();
    try {
      comm->all_reduce_sum(t);
      ADD_FAILURE() << "all_reduce completed without rank 1";
    } catch (const std::runtime_error& e) {
      EXPECT_TRUE(contains(e.what(), "gloo all_reduce failed on rank 0 of 2")) << e.what();
      EXPECT_TRUE(contains(e.what(), "did not join")) << e.what();
      std::fprintf(stderr, "rank 0 got: %s\n", e.what());
    }
    const double s = since(t0);
    EXPECT_GT(s, 2.5);  // it was the collective timeout...
    EXPECT_LT(s, 3 + 5.0);  // ...and not a hang
  }, within(90s));
  EXPECT_TRUE(r.ok()) << r.report();
}

// ---------------------------------------------------------------- under mpirun

TEST(MpiBackend, CollectivesUnderMpirun) {
  auto r = run_wrapped(mpirun(2), [] {
    const RankInfo info = detect_rank_info();
    ASSERT_EQ(info.launcher, "mpi");
    ASSERT_EQ(info.world_size, 2);
    auto comm = init_comm(info, "mpi", 60s);
    EXPECT_EQ(comm->backend(), "mpi");
    check_collectives(*comm);
    check_bf16_collectives(*comm);
    check_argument_errors(*comm);
    auto h = at::ones({4}, at::kHalf);
    try {
      comm->all_reduce_sum(h);
      ADD_FAILURE() << "float16 all_reduce accepted by the mpi backend";
    } catch (const std::invalid_argument& e) {
      EXPECT_TRUE(contains(e.what(), "Half")) << e.what();
    }
    // ...but float16 can still be moved, as opaque 2-byte elements.
    auto hb = comm->rank() == 0 ? at::full({4}, 1.5, at::kHalf) : at::zeros({4}, at::kHalf);
    comm->broadcast(hb, 0);
    expect_equal(hb, at::full({4}, 1.5, at::kHalf), "float16 broadcast");
  }, within(150s));
  EXPECT_TRUE(r.ok()) << r.report();
  EXPECT_EQ(r.bodies_finished(), 2) << r.report();
}

TEST(MpiBackend, CollectivesUnderMpirunFourRanks) {
  auto r = run_wrapped(mpirun(4), [] {
    const RankInfo info = detect_rank_info();
    ASSERT_EQ(info.world_size, 4);
    auto comm = init_comm(info, "mpi", 60s);
    check_collectives(*comm);
    check_bf16_collectives(*comm);
  }, within(150s));
  EXPECT_TRUE(r.ok()) << r.report();
  EXPECT_EQ(r.bodies_finished(), 4) << r.report();
}

TEST(GlooUnderMpirun, RendezvousOverMpiThenCollectives) {
  auto r = run_wrapped(mpirun(2), [] {
    const RankInfo info = detect_rank_info();
    ASSERT_EQ(info.launcher, "mpi");
    EXPECT_EQ(info.master_addr, "");  // nothing in the env: rank 0 sends it over MPI
    EXPECT_EQ(info.master_port, 0);
    auto comm = init_comm(info, "gloo", 60s);
    EXPECT_EQ(comm->backend(), "gloo");
    check_collectives(*comm);
    check_bf16_collectives(*comm);
  }, within(150s));
  EXPECT_TRUE(r.ok()) << r.report();  // mpirun exits 0: MPI was finalised after rendezvous
  EXPECT_EQ(r.bodies_finished(), 2) << r.report();
}

TEST(MpiBackend, RankThatNeverJoinsTimesOutNamingTheOperation) {
  auto r = run_wrapped(mpirun(2), [] {
    auto comm = init_comm(detect_rank_info(), "mpi", 3s);
    if (comm->rank() == 1) {
      std::this_thread::sleep_for(120s);  // mpirun must stop this, not the sleep's end
      return;
    }
    auto t = at::ones({8});
    const auto t0 = Clock::now();
    try {
      comm->all_reduce_sum(t);
      ADD_FAILURE() << "all_reduce completed without rank 1";
    } catch (const std::runtime_error& e) {
      EXPECT_TRUE(contains(e.what(), "mpi all_reduce on rank 0 of 2")) << e.what();
      EXPECT_TRUE(contains(e.what(), "timed out after 3 s")) << e.what();
      std::fprintf(stderr, "rank 0 got: %s\n", e.what());
    }
    EXPECT_LT(since(t0), 3 + 5.0);
  }, within(90s));
  const std::string all = r.children.at(0).out + r.children.at(0).err;
  EXPECT_FALSE(r.timed_out) << r.report();
  EXPECT_LT(r.seconds, 60) << r.report();
  // Rank 0 reported the timeout, then aborted the job at exit (it must not MPI_Finalize while a
  // collective is pending), so mpirun stopped rank 1 and failed.
  EXPECT_TRUE(contains(all, "rank 0 got: mpi all_reduce on rank 0 of 2")) << r.report();
  EXPECT_TRUE(contains(all, "aborting the MPI job")) << r.report();
  EXPECT_NE(r.children.at(0).exit_code, 0) << r.report();
  EXPECT_EQ(r.bodies_finished(), 1) << r.report();
}

TEST(MpiBackend, RankThatThrowsStopsTheJob) {
  auto r = run_wrapped(mpirun(2), [] {
    auto comm = init_comm(detect_rank_info(), "mpi", 100s);
    auto t = at::ones({8});
    comm->all_reduce_sum(t);
    if (comm->rank() == 1) throw std::runtime_error("rank 1 gives up before the second all_reduce");
    comm->all_reduce_sum(t);  // would wait 100 s; the aborted job must end it much sooner
    ADD_FAILURE() << "all_reduce completed without rank 1";
  }, within(90s));
  const std::string all = r.children.at(0).out + r.children.at(0).err;
  EXPECT_FALSE(r.timed_out) << r.report();
  EXPECT_LT(r.seconds, 60) << r.report();
  EXPECT_NE(r.children.at(0).exit_code, 0) << r.report();
  EXPECT_TRUE(contains(all, "rank 1 gives up")) << r.report();
  EXPECT_TRUE(contains(all, "aborting the MPI job")) << r.report();
}
