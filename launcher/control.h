// The ZeroMQ control plane of `ftrun --nproc-per-node/--nnodes`: message format, endpoints
// and the environment contract between an agent and the workers it spawns. No torch here.
//
// Two kinds of links, every message one ZeroMQ frame holding a JSON object with a "t" (type):
//
//  worker -> its node's agent (PUSH -> PULL on tcp://127.0.0.1:<ephemeral>, the endpoint is in
//  FTRUN_AGENT_ENDPOINT):
//    {"t":"hello","rank":R,"pid":P}       once, when the worker starts
//    {"t":"hb","rank":R,"pid":P}          every kWorkerHeartbeat, from a background thread
//    {"t":"progress","rank":R,"pid":P,"done":D,"total":T}   after every optimizer step
//    {"t":"error","rank":R,"pid":P,"what":"..."}  the error the worker is about to exit with
//  (the pid tells this attempt's workers from an earlier attempt's late messages)
//
//  agent of node N -> agent of node 0, the coordinator (DEALER -> ROUTER on
//  tcp://*:<--master-port>; node 0's own agent connects to it too, so every node runs the same
//  follower code):
//    {"t":"hello","node":N,"nnodes":..,"nproc":..,"config_hash":"..","config":"path","host":".."}
//    {"t":"hb"}                                        every kAgentHeartbeat
//    {"t":"failed","attempt":A,"rank":R,"kind":K,"what":"..","signal":S}
//        K: "signal" (killed by a signal ftrun did not send), "hang" (no heartbeat), "stall"
//        (--progress-timeout), "error", "exit", "interrupted" (the agent got signal S); the
//        coordinator ignores reports of another attempt than the current one
//    {"t":"stopped","attempt":A}   all local workers are gone after a "stop"
//    {"t":"done","attempt":A}      all local workers exited 0
//  coordinator -> agents:
//    {"t":"start","attempt":A,"master_addr":..,"worker_port":P,"world":W}
//    {"t":"stop","attempt":A,"stall":B}   stop the local workers (SIGTERM, SIGKILL after the
//                                  grace); B: the cause is stuck ranks (--progress-timeout), so
//                                  first report the local ranks that are silent for half of it
//    {"t":"exit","code":C,"why":".."}   the job is over; print why and exit with C
//    {"t":"hb"}
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace zmq {
class socket_t;
}

namespace ftrun::launcher {

// Set by the agent in every worker's environment (besides the torchrun variables).
constexpr const char* kAgentEndpointEnv = "FTRUN_AGENT_ENDPOINT";
constexpr const char* kRestartCountEnv = "FTRUN_RESTART_COUNT";

constexpr auto kWorkerHeartbeat = std::chrono::milliseconds(500);
constexpr auto kAgentHeartbeat = std::chrono::milliseconds(500);

// Sends one JSON message without blocking on a full queue (a dead peer must not hang us).
void send_json(zmq::socket_t& socket, const nlohmann::json& message);
// Receives one message if one is waiting; a ROUTER's identity frame goes to *identity.
std::optional<nlohmann::json> recv_json(zmq::socket_t& socket, std::string* identity = nullptr);
// ROUTER side: a message to the peer with this identity.
void send_json_to(zmq::socket_t& router, const std::string& identity, const nlohmann::json& message);

// A TCP port that is free on this host right now (bound to port 0 and released).
int free_tcp_port();

// FNV-1a 64 of the given strings, as 16 hex digits: the config fingerprint the agents compare
// at rendezvous (config file bytes and every command-line setting).
std::string fingerprint(const std::vector<std::string>& parts);

// "killed by signal 9 (SIGKILL)" / "exited with code 1" for a waitpid() status.
std::string describe_exit(int status);

}  // namespace ftrun::launcher
