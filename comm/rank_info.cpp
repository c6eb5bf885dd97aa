// Launch-environment detection (see rank_info.h for the precedence and docs/distributed.md for
// the port rules). Every error names the variable and its value, because the person reading
// it is usually looking at a batch script, not at this code.
#include "comm/rank_info.h"

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace ftrun::comm {
namespace {

using Env = std::map<std::string, std::string>;

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error("launch environment: " + msg); }

// Present and non-empty: `export RANK=` in a script means "unset" to most shells' users.
bool has(const Env& env, const std::string& name) {
  auto it = env.find(name);
  return it != env.end() && !it->second.empty();
}

const std::string& value(const Env& env, const std::string& name) { return env.at(name); }

int parse_int_value(const std::string& name, const std::string& text) {
  std::string t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t b = 0;
  while (b < t.size() && std::isspace(static_cast<unsigned char>(t[b]))) ++b;
  t = t.substr(b);
  bool ok = !t.empty();
  for (size_t i = 0; ok && i < t.size(); ++i)
    ok = std::isdigit(static_cast<unsigned char>(t[i])) || (i == 0 && t[i] == '-' && t.size() > 1);
  long long v = 0;
  if (ok) {
    errno = 0;
    v = std::strtoll(t.c_str(), nullptr, 10);
    ok = errno == 0 && v >= INT_MIN && v <= INT_MAX;
  }
  if (!ok) fail(name + "='" + text + "' is not an integer");
  return static_cast<int>(v);
}

int get_int(const Env& env, const std::string& name) { return parse_int_value(name, value(env, name)); }

void require(const Env& env, const std::string& name, const std::string& mode, const std::string& because) {
  if (!has(env, name)) fail(name + " is missing (" + mode + " launch detected because " + because + " is set)");
}

void check_port(const std::string& name, int port) {
  if (port < 1 || port > 65535) fail(name + "=" + std::to_string(port) + " is not a TCP port (1-65535)");
}

// The shared consistency rules, phrased with the variable names of the mode at hand.
void check_ranks(const RankInfo& r, const std::string& rank_v, const std::string& world_v,
                 const std::string& local_v, const std::string& local_world_v) {
  if (r.world_size < 1) fail(world_v + "=" + std::to_string(r.world_size) + " must be at least 1");
  if (r.rank < 0 || r.rank >= r.world_size)
    fail(rank_v + "=" + std::to_string(r.rank) + " is out of range for " + world_v + "=" +
         std::to_string(r.world_size) + " (must be 0.." + std::to_string(r.world_size - 1) + ")");
  if (r.local_world_size < 1 || r.local_world_size > r.world_size)
    fail(local_world_v + "=" + std::to_string(r.local_world_size) + " must be between 1 and " + world_v + "=" +
         std::to_string(r.world_size));
  if (r.local_rank < 0 || r.local_rank >= r.local_world_size)
    fail(local_v + "=" + std::to_string(r.local_rank) + " is out of range for " + local_world_v + "=" +
         std::to_string(r.local_world_size));
}

RankInfo from_torchrun(const Env& env) {
  const std::string because = has(env, "RANK") ? "RANK" : "WORLD_SIZE";
  const std::string mode = "torchrun-style";
  require(env, "RANK", mode, because);
  require(env, "WORLD_SIZE", mode, because);
  RankInfo r;
  r.launcher = "torchrun";
  r.rank = get_int(env, "RANK");
  r.world_size = get_int(env, "WORLD_SIZE");
  if (r.world_size > 1) {
    // A multi-rank job cannot guess where rank 0 is, nor which ranks share a node.
    for (const char* v : {"LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) require(env, v, mode, because);
  }
  r.local_rank = has(env, "LOCAL_RANK") ? get_int(env, "LOCAL_RANK") : 0;
  r.local_world_size = has(env, "LOCAL_WORLD_SIZE") ? get_int(env, "LOCAL_WORLD_SIZE") : 1;
  r.master_addr = has(env, "MASTER_ADDR") ? value(env, "MASTER_ADDR") : "127.0.0.1";
  r.master_port = has(env, "MASTER_PORT") ? get_int(env, "MASTER_PORT") : kDefaultMasterPort;
  check_port("MASTER_PORT", r.master_port);
  check_ranks(r, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE");
  if (has(env, "GROUP_RANK")) {
    r.node_rank = get_int(env, "GROUP_RANK");
    const int nodes = (r.world_size + r.local_world_size - 1) / r.local_world_size;
    if (r.node_rank < 0 || r.node_rank >= nodes)
      fail("GROUP_RANK=" + std::to_string(r.node_rank) + " is out of range for WORLD_SIZE/LOCAL_WORLD_SIZE=" +
           std::to_string(nodes) + " nodes");
  } else {
    r.node_rank = r.rank / r.local_world_size;  // torchrun numbers ranks node by node
  }
  return r;
}

RankInfo from_openmpi(const Env& env) {
  const std::string because = has(env, "OMPI_COMM_WORLD_RANK") ? "OMPI_COMM_WORLD_RANK" : "OMPI_COMM_WORLD_SIZE";
  const std::string mode = "OpenMPI";
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "OMPI_COMM_WORLD_LOCAL_SIZE"})
    require(env, v, mode, because);
  RankInfo r;
  r.launcher = "mpi";
  r.rank = get_int(env, "OMPI_COMM_WORLD_RANK");
  r.world_size = get_int(env, "OMPI_COMM_WORLD_SIZE");
  r.local_rank = get_int(env, "OMPI_COMM_WORLD_LOCAL_RANK");
  r.local_world_size = get_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE");
  check_ranks(r, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
              "OMPI_COMM_WORLD_LOCAL_SIZE");
  // Not OMPI_COMM_WORLD_NODE_RANK: that counts processes across jobs on the node. mpirun's
  // default mapping (by slot) fills nodes in rank order, so rank / local size is the node.
  r.node_rank = r.rank / r.local_world_size;
  // mpirun exports no rendezvous endpoint; a user may pass one with -x MASTER_ADDR -x MASTER_PORT.
  r.master_addr = has(env, "MASTER_ADDR") ? value(env, "MASTER_ADDR") : "";
  r.master_port = has(env, "MASTER_PORT") ? get_int(env, "MASTER_PORT") : 0;
  if (r.master_port != 0) check_port("MASTER_PORT", r.master_port);
  return r;
}

RankInfo from_slurm(const Env& env) {
  const std::string mode = "Slurm";
  const std::string because = "SLURM_PROCID";
  const std::string ntasks_v = has(env, "SLURM_NTASKS") ? "SLURM_NTASKS" : "SLURM_NPROCS";
  if (!has(env, ntasks_v)) fail("SLURM_NTASKS is missing (Slurm launch detected because SLURM_PROCID is set)");
  require(env, "SLURM_LOCALID", mode, because);
  require(env, "SLURM_NODEID", mode, because);
  RankInfo r;
  r.launcher = "slurm";
  r.rank = get_int(env, "SLURM_PROCID");
  r.world_size = get_int(env, ntasks_v);
  r.local_rank = get_int(env, "SLURM_LOCALID");
  r.node_rank = get_int(env, "SLURM_NODEID");
  if (r.node_rank < 0) fail("SLURM_NODEID=" + value(env, "SLURM_NODEID") + " must not be negative");
  // --ntasks-per-node gives one number; otherwise the step's (then the job's) per-node counts,
  // in node order, e.g. "2(x3),1".
  std::string local_world_v;
  if (has(env, "SLURM_NTASKS_PER_NODE")) {
    local_world_v = "SLURM_NTASKS_PER_NODE";
    r.local_world_size = get_int(env, local_world_v);
  } else {
    for (const char* v : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"})
      if (has(env, v)) {
        local_world_v = v;
        break;
      }
    if (local_world_v.empty())
      fail("neither SLURM_NTASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set (Slurm launch detected because "
           "SLURM_PROCID is set)");
    std::vector<int> per_node;
    try {
      per_node = expand_slurm_tasks_per_node(value(env, local_world_v));
    } catch (const std::exception& e) {
      fail(local_world_v + ": " + e.what());
    }
    if (r.node_rank >= static_cast<int>(per_node.size()))
      fail("SLURM_NODEID=" + std::to_string(r.node_rank) + " but " + local_world_v + "='" +
           value(env, local_world_v) + "' lists only " + std::to_string(per_node.size()) + " node(s)");
    r.local_world_size = per_node[r.node_rank];
  }
  check_ranks(r, "SLURM_PROCID", ntasks_v, "SLURM_LOCALID", local_world_v);

  if (has(env, "MASTER_ADDR")) {
    r.master_addr = value(env, "MASTER_ADDR");
  } else {
    // Task 0 runs on the first node of its step; the step's list is a subset of the job's.
    std::string list_v;
    for (const char* v : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})
      if (has(env, v)) {
        list_v = v;
        break;
      }
    if (list_v.empty())
      fail("SLURM_JOB_NODELIST (or SLURM_NODELIST) is missing and MASTER_ADDR is not set: cannot tell where "
           "rank 0 runs");
    std::vector<std::string> hosts;
    try {
      hosts = expand_slurm_hostlist(value(env, list_v));
    } catch (const std::exception& e) {
      fail(list_v + ": " + e.what());
    }
    if (hosts.empty()) fail(list_v + "='" + value(env, list_v) + "' names no host");
    r.master_addr = hosts.front();
  }
  if (has(env, "MASTER_PORT")) {
    r.master_port = get_int(env, "MASTER_PORT");
  } else {
    const std::string job_v = has(env, "SLURM_JOB_ID") ? "SLURM_JOB_ID" : "SLURM_JOBID";
    // Every task of the job derives the same port without talking to the others; the range
    // 15000-24999 stays below Linux's ephemeral ports (Lightning's rule).
    r.master_port = has(env, job_v) ? 15000 + get_int(env, job_v) % 10000 : kDefaultMasterPort;
  }
  check_port("MASTER_PORT", r.master_port);
  return r;
}

std::vector<std::string> split_top_level(const std::string& s, const std::string& whole) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : s) {
    if (c == '[') {
      if (depth++ > 0) throw std::runtime_error("nested '[' in hostlist '" + whole + "'");
    } else if (c == ']') {
      if (--depth < 0) throw std::runtime_error("']' without '[' in hostlist '" + whole + "'");
    }
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0) throw std::runtime_error("'[' without ']' in hostlist '" + whole + "'");
  out.push_back(cur);
  return out;
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// "01-03,7" -> 01 02 03 7
std::vector<std::string> expand_bracket(const std::string& body, const std::string& whole) {
  std::vector<std::string> out;
  std::stringstream ss(body);
  std::string part;
  bool any = false;
  while (std::getline(ss, part, ',')) {
    any = true;
    const auto dash = part.find('-');
    const std::string lo_s = dash == std::string::npos ? part : part.substr(0, dash);
    const std::string hi_s = dash == std::string::npos ? part : part.substr(dash + 1);
    if (!all_digits(lo_s) || !all_digits(hi_s) || lo_s.size() > 9 || hi_s.size() > 9)
      throw std::runtime_error("bad range '" + part + "' in hostlist '" + whole + "'");
    const long lo = std::stol(lo_s), hi = std::stol(hi_s);
    if (hi < lo) throw std::runtime_error("range '" + part + "' runs backwards in hostlist '" + whole + "'");
    if (hi - lo > 1000000) throw std::runtime_error("range '" + part + "' is too large in hostlist '" + whole + "'");
    for (long v = lo; v <= hi; ++v) {
      std::string n = std::to_string(v);
      if (n.size() < lo_s.size()) n.insert(0, lo_s.size() - n.size(), '0');
      out.push_back(n);
    }
  }
  if (!any || body.empty() || body.back() == ',')
    throw std::runtime_error("empty element in '[" + body + "]' of hostlist '" + whole + "'");
  return out;
}

std::vector<std::string> expand_item(const std::string& item, const std::string& whole) {
  const auto open = item.find('[');
  if (open == std::string::npos) return {item};
  const auto close = item.find(']', open);  // split_top_level already checked the pairing
  const std::string prefix = item.substr(0, open);
  const auto values = expand_bracket(item.substr(open + 1, close - open - 1), whole);
  const auto tails = expand_item(item.substr(close + 1), whole);
  std::vector<std::string> out;
  out.reserve(values.size() * tails.size());
  for (const auto& v : values)
    for (const auto& t : tails) out.push_back(prefix + v + t);
  return out;
}

}  // namespace

std::vector<std::string> expand_slurm_hostlist(const std::string& hostlist) {
  std::vector<std::string> hosts;
  std::string s;
  for (char c : hostlist)
    if (!std::isspace(static_cast<unsigned char>(c))) s += c;
  if (s.empty()) return hosts;
  for (const auto& item : split_top_level(s, hostlist)) {
    if (item.empty()) throw std::runtime_error("empty host name in hostlist '" + hostlist + "'");
    if (item.front() == '[') throw std::runtime_error("host name starts with '[' in hostlist '" + hostlist + "'");
    for (auto& h : expand_item(item, hostlist)) hosts.push_back(std::move(h));
  }
  return hosts;
}

std::vector<int> expand_slurm_tasks_per_node(const std::string& spec) {
  std::vector<int> out;
  std::stringstream ss(spec);
  std::string part;
  auto bad = [&](const std::string& why) {
    throw std::runtime_error("bad tasks-per-node list '" + spec + "': " + why);
  };
  while (std::getline(ss, part, ',')) {
    const auto paren = part.find('(');
    const std::string count_s = part.substr(0, paren);
    if (!all_digits(count_s) || count_s.size() > 9) bad("'" + part + "' is not N or N(xM)");
    int repeat = 1;
    if (paren != std::string::npos) {
      if (part.size() < paren + 4 || part[paren + 1] != 'x' || part.back() != ')')
        bad("'" + part + "' is not N or N(xM)");
      const std::string rep_s = part.substr(paren + 2, part.size() - paren - 3);
      if (!all_digits(rep_s) || rep_s.size() > 6) bad("'" + part + "' is not N or N(xM)");
      repeat = std::stoi(rep_s);
    }
    const int count = std::stoi(count_s);
    for (int i = 0; i < repeat; ++i) out.push_back(count);
  }
  if (out.empty() || spec.back() == ',') bad("empty element");
  return out;
}

RankInfo detect_rank_info(const std::map<std::string, std::string>& env) {
  if (has(env, "RANK") || has(env, "WORLD_SIZE")) return from_torchrun(env);
  if (has(env, "OMPI_COMM_WORLD_RANK") || has(env, "OMPI_COMM_WORLD_SIZE")) return from_openmpi(env);
  // SLURM_PROCID is also set in the batch script itself (the allocation's task 0); only a
  // task started by srun has a step id. Treating the batch script as rank 0 of SLURM_NTASKS
  // would make it wait for ranks that never start.
  if (has(env, "SLURM_PROCID") && (has(env, "SLURM_STEP_ID") || has(env, "SLURM_STEPID"))) return from_slurm(env);
  for (const char* v : {"LOCAL_RANK", "LOCAL_WORLD_SIZE"})
    if (has(env, v))
      fail(std::string(v) + " is set but RANK and WORLD_SIZE are missing (partial torchrun-style environment)");
  RankInfo r;
  r.launcher = "single";
  r.master_addr = "127.0.0.1";
  r.master_port = kDefaultMasterPort;
  return r;
}

std::map<std::string, std::string> environment_map() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return env;
}

RankInfo detect_rank_info() { return detect_rank_info(environment_map()); }

std::string describe(const RankInfo& r) {
  std::ostringstream os;
  os << "rank " << r.rank << "/" << r.world_size << " (local " << r.local_rank << "/" << r.local_world_size
     << ", node " << r.node_rank << ") via " << r.launcher;
  if (r.world_size > 1) {
    os << ", master " << (r.master_addr.empty() ? "<broadcast over MPI>" : r.master_addr) << ":";
    if (r.master_port) os << r.master_port;
    else os << "<chosen by rank 0>";
  }
  return os.str();
}

}  // namespace ftrun::comm
