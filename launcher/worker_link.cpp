// Worker side of the control plane (see worker_link.h and control.h).
#include "launcher/worker_link.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "launcher/control.h"

namespace ftrun::launcher {

struct WorkerLink::Impl {
  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::push};
  std::mutex mu;  // zmq sockets are not thread-safe: the heartbeat thread shares this one
  std::condition_variable cv;
  bool stop = false;
  int rank = 0, pid = 0;
  std::thread heartbeat;

  void send(const nlohmann::json& m) {
    std::lock_guard<std::mutex> lock(mu);
    send_json(socket, m);
  }
};

WorkerLink::WorkerLink() = default;

std::unique_ptr<WorkerLink> WorkerLink::from_env(int rank) {
  std::unique_ptr<WorkerLink> link(new WorkerLink());
  const char* endpoint = std::getenv(kAgentEndpointEnv);
  if (!endpoint || !*endpoint) return link;
  auto impl = std::make_unique<Impl>();
  impl->rank = rank;
  impl->pid = int(::getpid());
  impl->socket.set(zmq::sockopt::linger, 2000);
  impl->socket.set(zmq::sockopt::sndhwm, 1000);
  impl->socket.connect(endpoint);
  impl->send({{"t", "hello"}, {"rank", rank}, {"pid", impl->pid}});
  Impl* p = impl.get();
  impl->heartbeat = std::thread([p] {
    std::unique_lock<std::mutex> lock(p->mu);
    while (!p->stop) {
      send_json(p->socket, {{"t", "hb"}, {"rank", p->rank}, {"pid", p->pid}});
      p->cv.wait_for(lock, kWorkerHeartbeat, [p] { return p->stop; });
    }
  });
  link->impl_ = std::move(impl);
  return link;
}

WorkerLink::~WorkerLink() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->heartbeat.join();
}

bool WorkerLink::active() const { return impl_ != nullptr; }

void WorkerLink::progress(int64_t done, int64_t total) {
  if (impl_) impl_->send({{"t", "progress"}, {"rank", impl_->rank}, {"pid", impl_->pid}, {"done", done}, {"total", total}});
}

void WorkerLink::error(const std::string& what) {
  if (!impl_) return;
  impl_->send({{"t", "error"}, {"rank", impl_->rank}, {"pid", impl_->pid}, {"what", what}});
  // The socket's linger (2 s) delivers it when the link is destroyed before exit.
}

}  // namespace ftrun::launcher
