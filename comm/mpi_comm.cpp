// The mpi backend (OpenMPI collectives on CPU tensors) and the MPI bits of gloo-under-mpirun.
//
// MPI collectives have no timeout, so each one is started non-blocking (MPI-3 MPI_I*) and
// polled with MPI_Test until it completes or the collective timeout passes; then it throws an
// error naming the operation. A timed-out collective cannot be cancelled, so from then on the
// process must not call MPI_Finalize (it would wait for the missing rank forever): it is marked
// failed and exits through MPI_Abort, which makes mpirun stop every rank. The same happens when
// the Comm is destroyed by an exception unwinding past it, i.e. when this rank gives up:
// otherwise the others would wait inside a collective for it.
#include <c10/util/BFloat16.h>
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "comm/comm_impl.h"

namespace ftrun::comm::detail {
namespace {

struct MpiState {
  bool initialized_here = false;
  bool failed = false;
  std::string failure;
};

MpiState& state() {
  static MpiState s;
  return s;
}

void mark_failed(const std::string& why) {
  if (!state().failed) state().failure = why;
  state().failed = true;
}

bool mpi_live() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

void at_exit() {
  if (!state().initialized_here || !mpi_live()) return;
  if (state().failed) {
    std::fprintf(stderr, "ftrun: aborting the MPI job: %s\n", state().failure.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
}

std::string mpi_error(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  return std::string(buf, len);
}

// Polls a started request; `what` names it in the error.
void wait_request(MPI_Request& req, const std::string& what, Ms timeout) {
  const auto start = std::chrono::steady_clock::now();
  NoticeClock notices;  // issue 16: a long wait says what it waits for
  int done = 0;
  for (long spins = 0;; ++spins) {
    const int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      mark_failed(what + ": " + mpi_error(rc));
      throw std::runtime_error(what + " failed: " + mpi_error(rc));
    }
    if (done) return;
    if (std::chrono::steady_clock::now() - start > timeout) {
      const std::string msg = what + " timed out after " + duration_desc(timeout) +
                              "; a rank did not join this collective (it may have failed or be stuck)";
      mark_failed(msg);
      throw std::runtime_error(msg);
    }
    if (spins % 256 == 0) {
      const auto waited = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
      if (notices.due(waited))
        print_notice(what + " has waited " + waited_desc(waited) + " (timeout " + duration_desc(timeout) +
                     ") for the other ranks of MPI_COMM_WORLD (MPI cannot tell which ones have not arrived)");
    }
    // Spin briefly for latency, then back off so a long wait does not burn a shared core.
    if (spins < 2000) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void check_started(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  mark_failed(what + ": " + mpi_error(rc));
  throw std::runtime_error(what + " could not start: " + mpi_error(rc));
}

// Types MPI can sum; 16-bit floats and bool have no MPI_SUM.
MPI_Datatype sum_type(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
  }
}

// Any dtype can be moved (gathered, broadcast) as opaque elements of its size.
MPI_Datatype move_type(const at::Tensor& t);

// MPI has no bfloat16: bf16 tensors travel as 2-byte elements and are summed by this
// user-defined operation, each pair added in fp32 and rounded once (what a bf16 ring
// reduction on NCCL does per hop).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = c10::BFloat16(float(a[i]) + float(b[i]));
}
MPI_Op bf16_sum_op() {
  static std::once_flag once;
  static MPI_Op op = MPI_OP_NULL;
  std::call_once(once, [] { MPI_Op_create(&bf16_sum, /*commute=*/1, &op); });
  return op;
}

MPI_Datatype move_type(const at::Tensor& t) {
  MPI_Datatype st = sum_type(t.scalar_type());
  if (st != MPI_DATATYPE_NULL) return st;
  static std::mutex mu;
  static std::map<int, MPI_Datatype> by_size;
  std::lock_guard<std::mutex> lock(mu);
  const int size = static_cast<int>(t.element_size());
  auto it = by_size.find(size);
  if (it != by_size.end()) return it->second;
  MPI_Datatype ty;
  MPI_Type_contiguous(size, MPI_BYTE, &ty);
  MPI_Type_commit(&ty);
  by_size[size] = ty;
  return ty;
}

int mpi_count(const std::string& op, const at::Tensor& t) {
  if (t.numel() > INT_MAX)
    throw std::invalid_argument("mpi " + op + ": " + tensor_desc(t) + " exceeds one MPI call's count (INT_MAX)");
  return static_cast<int>(t.numel());
}

class MpiComm : public Comm {
 public:
  MpiComm(int rank, int world, Ms timeout)
      : rank_(rank), n_(world), timeout_(timeout), unwinding_at_start_(std::uncaught_exceptions()) {
    // A private communicator: our collectives never match anyone else's on MPI_COMM_WORLD,
    // and errors come back as codes instead of aborting inside the library.
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }

  ~MpiComm() override {
    if (std::uncaught_exceptions() > unwinding_at_start_)
      mark_failed("rank " + std::to_string(rank_) + " left its collectives because of an exception");
    // No MPI_Comm_free: it is collective, and MPI_Finalize releases the communicator anyway.
  }

  int rank() const override { return rank_; }
  int world_size() const override { return n_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(at::Tensor& t) override {
    check_dense("mpi", "all_reduce", t);
    const MPI_Datatype ty = summable("all_reduce", t);
    if (t.numel() > 0) {
      MPI_Request req;
      check_started(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), mpi_count("all_reduce", t), ty, sum_op(t), comm_, &req),
                    what("all_reduce", t));
      wait_request(req, what("all_reduce", t), timeout_);
    }
    count("all_reduce", all_reduce_bytes(nbytes(t), n_));
  }

  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) override {
    check_reduce_scatter("mpi", input, output, n_);
    const MPI_Datatype ty = summable("reduce_scatter", input);
    if (input.numel() > 0) {
      // MPI forbids overlapping send and receive buffers unless MPI_IN_PLACE is used.
      at::Tensor out = output.is_alias_of(input) ? at::empty_like(output) : output;
      MPI_Request req;
      check_started(MPI_Ireduce_scatter_block(input.data_ptr(), out.data_ptr(), mpi_count("reduce_scatter", output),
                                              ty, sum_op(input), comm_, &req),
                    what("reduce_scatter", input));
      wait_request(req, what("reduce_scatter", input), timeout_);
      if (!out.is_same(output)) output.copy_(out);
    }
    count("reduce_scatter", share_bytes(nbytes(input), n_));
  }

  void all_gather(const at::Tensor& input, at::Tensor& output) override {
    check_all_gather("mpi", input, output, n_);
    if (input.numel() > 0) {
      at::Tensor in = input.is_alias_of(output) ? input.clone() : input;
      const MPI_Datatype ty = move_type(input);
      const int k = mpi_count("all_gather", input);
      MPI_Request req;
      check_started(MPI_Iallgather(in.data_ptr(), k, ty, output.data_ptr(), k, ty, comm_, &req),
                    what("all_gather", input));
      wait_request(req, what("all_gather", input), timeout_);
    }
    count("all_gather", share_bytes(nbytes(output), n_));
  }

  void broadcast(at::Tensor& t, int root) override {
    check_dense("mpi", "broadcast", t);
    check_root("mpi", root, n_);
    if (t.numel() > 0) {
      MPI_Request req;
      check_started(MPI_Ibcast(t.data_ptr(), mpi_count("broadcast", t), move_type(t), root, comm_, &req),
                    what("broadcast", t));
      wait_request(req, what("broadcast", t), timeout_);
    }
    count("broadcast", rank_ == root ? nbytes(t) : 0);
  }

  void barrier() override {
    MPI_Request req;
    const std::string w = "mpi barrier on rank " + std::to_string(rank_) + " of " + std::to_string(n_);
    check_started(MPI_Ibarrier(comm_, &req), w);
    wait_request(req, w, timeout_);
  }

 private:
  std::string what(const char* op, const at::Tensor& t) const {
    return "mpi " + std::string(op) + " on rank " + std::to_string(rank_) + " of " + std::to_string(n_) + " (" +
           tensor_desc(t) + ")";
  }

  static MPI_Op sum_op(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 ? bf16_sum_op() : MPI_SUM; }

  MPI_Datatype summable(const char* op, const at::Tensor& t) const {
    if (t.scalar_type() == at::kBFloat16) return move_type(t);
    const MPI_Datatype ty = sum_type(t.scalar_type());
    if (ty == MPI_DATATYPE_NULL)
      throw std::invalid_argument("mpi " + std::string(op) + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                                  " cannot be summed by MPI (supported: float32, float64, bfloat16, int8/16/32/64, uint8); "
                                  "use the gloo backend or float32");
    return ty;
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_, n_;
  Ms timeout_;
  int unwinding_at_start_;
};

}  // namespace

void mpi_init_once() {
  int init = 0, fin = 0;
  MPI_Finalized(&fin);
  if (fin)
    throw std::runtime_error("MPI was already finalised in this process (MPI can be initialised only once; "
                             "gloo-under-mpirun ends it after rendezvous)");
  MPI_Initialized(&init);
  if (init) return;  // someone else owns it; they also finalise it
  int provided = 0;
  const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  if (rc != MPI_SUCCESS) throw std::runtime_error("MPI_Init_thread failed: " + mpi_error(rc));
  state().initialized_here = true;
  std::atexit(at_exit);
}

void mpi_finalize_now() {
  if (state().initialized_here && !state().failed && mpi_live()) MPI_Finalize();
}

Endpoint mpi_broadcast_endpoint(const RankInfo& info, const Endpoint* mine, const std::string* error, Ms timeout) {
  struct Wire {
    int32_t port;
    int32_t failed;
    char text[1024];
  } w;
  std::memset(&w, 0, sizeof w);
  if (info.rank == 0) {
    const std::string& text = error ? *error : mine->addr;
    w.failed = error ? 1 : 0;
    w.port = mine ? mine->port : 0;
    std::strncpy(w.text, text.c_str(), sizeof w.text - 1);
  }
  MPI_Request req;
  const std::string what = "rendezvous over MPI (rank " + std::to_string(info.rank) + " waiting for rank 0's "
                           "TCPStore address and port)";
  check_started(MPI_Ibcast(&w, sizeof w, MPI_BYTE, 0, MPI_COMM_WORLD, &req), what);
  wait_request(req, what, timeout);
  if (w.failed) {
    if (info.rank == 0) return {};
    throw std::runtime_error("rendezvous: rank 0 failed to start: " + std::string(w.text));
  }
  return {std::string(w.text), w.port};
}

std::shared_ptr<Comm> make_mpi_comm(const RankInfo& info, Ms collective_timeout) {
  mpi_init_once();
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank != info.rank || size != info.world_size)
    throw std::runtime_error("backend mpi: MPI says rank " + std::to_string(rank) + " of " + std::to_string(size) +
                             " but the launch environment says rank " + std::to_string(info.rank) + " of " +
                             std::to_string(info.world_size) + " (" + info.launcher +
                             "); start the processes with mpirun, or use backend gloo");
  return std::make_shared<MpiComm>(rank, size, collective_timeout);
}

}  // namespace ftrun::comm::detail
