// Control-plane helpers shared by the agent and the worker link (see control.h).
#include "launcher/control.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <zmq.hpp>

namespace ftrun::launcher {

void send_json(zmq::socket_t& socket, const nlohmann::json& message) {
  const auto text = message.dump();
  // dontwait: a PUSH/DEALER whose peer is gone would block forever once its queue is full.
  (void)socket.send(zmq::buffer(text), zmq::send_flags::dontwait);
}

void send_json_to(zmq::socket_t& router, const std::string& identity, const nlohmann::json& message) {
  const auto text = message.dump();
  if (!router.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return;
  (void)router.send(zmq::buffer(text), zmq::send_flags::dontwait);
}

std::optional<nlohmann::json> recv_json(zmq::socket_t& socket, std::string* identity) {
  zmq::message_t frame;
  if (!socket.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
  if (identity) {
    *identity = frame.to_string();
    if (!frame.more()) return std::nullopt;
    if (!socket.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
  }
  // Drain anything else of a multi-frame message we do not speak.
  bool more = frame.more();
  std::string body = frame.to_string();
  while (more) {
    zmq::message_t rest;
    if (!socket.recv(rest, zmq::recv_flags::dontwait)) break;
    more = rest.more();
  }
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("t")) return nlohmann::json{{"t", "garbage"}, {"raw", body.substr(0, 80)}};
  return j;
}

int free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket(): ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error(std::string("cannot find a free TCP port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string fingerprint(const std::vector<std::string>& parts) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64 offset basis
  for (const auto& p : parts) {
    for (unsigned char c : p) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // separator, so {"ab","c"} and {"a","bc"} differ
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (abbrev ? " (SIG" + std::string(abbrev) + ")" : "");
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended with status " + std::to_string(status);
}

}  // namespace ftrun::launcher
