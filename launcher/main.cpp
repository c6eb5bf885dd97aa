// The ftrun executable: `ftrun CONFIG.yaml` trains; subcommands generate and make-tiny-model.
// Command-line parsing only; the work is in runtime/.
#include <boost/program_options.hpp>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "data/tokenizer.h"
#include "io/file.h"
#include "launcher/agent.h"
#include "launcher/commands.h"
#include "launcher/control.h"
#include "launcher/worker_link.h"
#include "models/config.h"
#include "models/family.h"
#include "models/tiny.h"
#include "io/output.h"
#include "peft/adapter.h"
#include "peft/merge.h"
#include "runtime/device.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "comm/rank_info.h"
#include "comm/rendezvous.h"
#include "runtime/generate.h"
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/pretrain.h"
#include "runtime/trainer.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace ftrun;

namespace ftrun::launcher {

// A data file that is a directory used to fail as "read error" when its tokens were hashed.
void check_data_files(const runtime::Config& cfg) {
  const std::pair<const char*, const std::string*> files[] = {{"data_config.train_file", &cfg.data_config.train_file},
                                                              {"data_config.val_file", &cfg.data_config.val_file},
                                                              {"data_config.test_file", &cfg.data_config.test_file}};
  for (const auto& [key, file] : files) {
    std::error_code ec;
    if (!file->empty() && fs::is_directory(*file, ec))
      throw std::runtime_error(*file + ": is a directory, expected a .json or .jsonl data file (" + cfg.path + ": " + key + ")");
  }
}

}  // namespace ftrun::launcher

namespace {

const char* kUsage =
    "usage:\n"
    "  ftrun CONFIG.yaml [--set KEY=VALUE]... [--model-dir DIR] [--data-dir DIR] [--resume yes|N|PATH]\n"
    "  ftrun DATA_DIR MODEL_DIR CONFIG.yaml [RESUME]            (the GLM-4 demo's argument order)\n"
    "  ftrun --nproc-per-node K [--nnodes N --node-rank R --master-addr HOST [--master-port P]]\n"
    "        [--max-restarts M] CONFIG.yaml [--set ...]           (spawn K ranks per node, torchrun-style)\n"
    "  ftrun generate PATH --prompt TEXT [--max-new-tokens N] [--base DIR] [--system TEXT]\n"
    "                [--temperature T] [--top-p P] [--top-k K] [--repetition-penalty R] [--seed S] [--no-cache]\n"
    "  ftrun chat PATH [--base DIR] [--system TEXT] [--show-prompt] [sampling options as generate]\n"
    "  ftrun eval CONFIG.yaml [--checkpoint DIR] [--split val|test] [--set KEY=VALUE]... [--output FILE]\n"
    "  ftrun data CONFIG.yaml [--split train|val|test] [--show N] [--tokens] [--set KEY=VALUE]...\n"
    "  ftrun report OUTPUT_DIR\n"
    "  ftrun merge ADAPTER_DIR OUT_DIR [--base DIR] [--max-shard-size BYTES] [--overwrite]\n"
    "  ftrun make-tiny-model OUT_DIR --corpus FILE [--vocab-size N] [--seed S] [--model-type llama|qwen2|chatglm3|glm4]\n"
    "                [--overwrite]\n"
    "  any command: --debug (or FTRUN_DEBUG=1) keeps libraries' full error text (stack frames)\n";

// This process's link to the agent that spawned it (inactive when there is none).
std::unique_ptr<launcher::WorkerLink> g_link;

// --debug / FTRUN_DEBUG=1: errors keep the libraries' full text (libtorch's stack frames).
bool g_debug = false;

double gb(double bytes) { return bytes / 1e9; }

// A message without the lines of a libtorch backtrace ("frame #3: ..." and "Exception raised
// from ..."), which a message wrapped by another layer may still carry.
std::string without_frames(const std::string& msg) {
  std::string out, line;
  std::istringstream in(msg);
  while (std::getline(in, line)) {
    if (line.rfind("frame #", 0) == 0 || line.rfind("Exception raised from ", 0) == 0) continue;
    out += (out.empty() ? "" : "\n") + line;
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// Issue 16: what reaches the user is ftrun's one-line form, never a library's raw text with
// 16-32 stack frames. Errors ftrun raises itself already say what and where; the libraries'
// own exceptions (libtorch, nlohmann, the allocator) get here only when no layer below knew
// the file or key, so they are named as what they are, with how to see the full text.
std::string user_message(const std::exception& e) {
  if (g_debug) return e.what();
  const std::string full = " (run with --debug or FTRUN_DEBUG=1 for the full text)";
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) {
    const std::string msg = without_frames(c->what_without_backtrace());
    // The CPU allocator's "you tried to allocate N bytes": say it as a memory estimate.
    const std::string tried = "you tried to allocate ";
    if (const auto at = msg.find(tried); at != std::string::npos) {
      const double bytes = std::atof(msg.c_str() + at + tried.size());
      char buf[256];
      std::snprintf(buf, sizeof buf, "out of memory: one allocation needs ~%.3g GB; this machine has %.1f GB", gb(bytes),
                    gb(models::machine_memory_bytes()));
      return buf + std::string(" (a size in the config, config.json or the data is too large?)");
    }
    const std::string first = msg.substr(0, msg.find('\n'));
    return "libtorch: " + first + full;
  }
  if (dynamic_cast<const nlohmann::json::exception*>(&e))
    return "unexpected JSON content: " + io::json_error_text(e) + full;
  if (dynamic_cast<const std::bad_alloc*>(&e)) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "out of memory (std::bad_alloc); this machine has %.1f GB", gb(models::machine_memory_bytes()));
    return buf + std::string(" (a size in the config, config.json or the data is too large?)");
  }
  return without_frames(e.what());
}

// Issue 16: peft_config.r or per_device_train_batch_size of 10^9 died in the allocator (30
// lines of libtorch frames, or std::bad_alloc after 20 s). Before anything loads, lower bounds
// of what one rank needs are held against this machine's memory: one targeted module's LoRA
// matrices (r x (in + out) >= r x hidden_size fp32 values), and a micro-batch's activations (a
// micro-batch always holds per_device_train_batch_size samples, cycling the data; at least one
// token a sample, whose hidden state every layer keeps for the backward pass, in 2 bytes).
// Lower bounds: a run that could fit is never refused.
void check_run_fits_memory(const runtime::Config& cfg) {
  const double has = models::machine_memory_bytes();
  if (has <= 0 || cfg.model_dir.empty()) return;
  models::ModelConfig mc;
  try {
    mc = models::load_model_config(cfg.model_dir);
  } catch (const std::exception&) {
    return;  // loading the model reports what is wrong with it
  }
  // A config.json whose sizes could not fit at all is the loader's to report (against the
  // weights' shapes, naming the key): its sizes are not to be trusted for these estimates.
  if (models::estimate_parameters(mc) * 2 > has) return;
  const double H = double(mc.hidden_size), L = double(std::max<int64_t>(1, mc.num_hidden_layers));
  auto refuse = [&](const std::string& key, const std::string& value, double needs, const std::string& what) {
    if (!(needs > has)) return;
    char buf[160];
    std::snprintf(buf, sizeof buf, " at least ~%.3g GB; this machine has %.1f GB", gb(needs), gb(has));
    throw std::runtime_error(cfg.path + ": " + key + " " + value + ": " + what + buf + " (hidden_size " +
                             std::to_string(mc.hidden_size) + ", " + std::to_string(mc.num_hidden_layers) + " layers in " +
                             mc.path + ")");
  };
  const auto& peft = cfg.peft_config;
  if (peft.is_object() && peft.value("peft_type", "") == "LORA" && peft.contains("r") && peft["r"].is_number()) {
    const double r = peft["r"].get<double>();
    refuse("peft_config.r", peft["r"].dump(), r * H * 4, "one module's LoRA matrices alone need");
  }
  const double bs = double(cfg.training_args.per_device_train_batch_size);
  refuse("training_args.per_device_train_batch_size", std::to_string(cfg.training_args.per_device_train_batch_size),
         bs * H * (L + 1) * 2, "a micro-batch of that many samples, at one token each, needs");
}

// sentencepiece's trainer fails with its internal assertion text ("Internal:
// ./src/trainer_interface.cc(580) [(static_cast<int>(...)) <= (...)] Vocabulary size is smaller
// than required_chars. 8 vs 316. ..."): said in make-tiny-model's terms, the assertion dropped.
std::string tokenizer_training_error(const std::string& what, const std::string& corpus, int vocab) {
  const std::string small = "Vocabulary size is smaller than required_chars. ";
  if (const auto at = what.find(small); at != std::string::npos) {
    long asked = 0, needed = 0;
    if (std::sscanf(what.c_str() + at + small.size(), "%ld vs %ld", &asked, &needed) == 2)
      return "--vocab-size " + std::to_string(vocab) + " is too small for " + corpus + ": its characters and " +
             "sentencepiece's own pieces need " + std::to_string(needed) + "; pass --vocab-size " + std::to_string(needed) +
             " or more";
  }
  std::string out = what;
  const auto internal = out.find("Internal: ");
  const auto close = internal == std::string::npos ? std::string::npos : out.find("] ", internal);
  if (close != std::string::npos) out.erase(internal, close + 2 - internal);
  return out;
}

// --max-shard-size: bytes, or transformers' "5GB" / "500MiB" form; never 0 or negative.
uint64_t parse_shard_size(const std::string& text) {
  const std::string bad = "--max-shard-size must be a positive number of bytes (e.g. 5000000000 or 5GB), got '" + text + "'";
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 15) throw po::error(bad);
  const uint64_t n = std::stoull(text.substr(0, digits));
  std::string unit = text.substr(digits);
  for (auto& ch : unit) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  static const std::pair<const char*, uint64_t> units[] = {{"", 1},        {"B", 1},          {"KB", 1000},
                                                           {"MB", 1000000}, {"GB", 1000000000}, {"KIB", 1ull << 10},
                                                           {"MIB", 1ull << 20}, {"GIB", 1ull << 30}};
  for (const auto& [name, mult] : units)
    if (unit == name) {
      if (n == 0) throw po::error(bad);
      return n * mult;
    }
  throw po::error(bad);
}

// Thread and allocator settings ftrun chooses itself (README, "Environment defaults";
// bench/env_defaults.sh measures them). On 2 cores ATen's OpenMP pool and OpenBLAS's own
// pthread pool take turns; with OpenMP's default ACTIVE wait policy the idle pool spins and
// steals the other's core, PASSIVE makes it sleep. glibc.malloc.hugetlb=1 makes malloc ask
// for transparent huge pages, so the large, short-lived activation buffers fault in 2 MiB at a
// time instead of 4 KiB (a 4 KiB fault costs 6-11 us here). A value the user has set wins.
struct EnvDefault {
  const char* name;
  const char* value;
};
constexpr EnvDefault kEnvDefaults[] = {
    {"OMP_WAIT_POLICY", "PASSIVE"},
    {"GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"},
};
constexpr const char* kEnvOptOut = "FTRUN_NO_ENV_DEFAULTS";
constexpr const char* kEnvApplied = "FTRUN_ENV_DEFAULTS_APPLIED";

// libgomp and glibc read these once, while the process is loaded, before main() runs: setting
// them now would be too late. So a process that lacks one re-executes itself once with them
// added: same pid, argv and other environment, nothing printed yet, so exit codes and signals
// are the same as without. The marker keeps it to once; ranks that ftrun's agent spawns
// inherit the variables and start directly. FTRUN_NO_ENV_DEFAULTS=1 turns it off.
void apply_env_defaults(char** argv) {
  const char* off = std::getenv(kEnvOptOut);
  if ((off && *off && std::string(off) != "0") || std::getenv(kEnvApplied)) return;
  bool added = false;
  for (const auto& d : kEnvDefaults) {
    if (std::getenv(d.name)) continue;
    ::setenv(d.name, d.value, 0);
    added = true;
  }
  if (!added) return;
  ::setenv(kEnvApplied, "1", 1);
  ::execv("/proc/self/exe", argv);
  // No /proc (exec failed): run on with the libraries' own settings; child processes still
  // get the variables.
}

// `log_level: debug`: the settings the run actually uses, on rank 0.
void print_debug_settings(const runtime::Config& cfg) {
  std::string env;
  for (const auto& d : kEnvDefaults) {
    const char* v = std::getenv(d.name);
    env += std::string(" ") + d.name + "=" + (v ? v : "(unset)");
  }
  std::printf("ftrun: environment:%s%s\n", env.c_str(),
              std::getenv(kEnvApplied) ? " (ftrun set the ones that were unset)" : "");
  std::printf("ftrun: config: %s\n", runtime::config_to_json(cfg).dump().c_str());
}

int cmd_train(const std::vector<std::string>& argv) {
  po::options_description opts("train options");
  std::vector<std::string> sets, positional;
  std::string model_dir, data_dir, resume;
  launcher::AgentOptions agent;
  double rdzv_timeout = 300, heartbeat_timeout = 30, grace = 5, progress_timeout = 0;
  po::options_description agent_opts("spawn mode (an agent per node starts the ranks; see docs/launcher.md)");
  agent_opts.add_options()("nproc-per-node", po::value(&agent.nproc_per_node), "ranks to start on this node")(
      "nnodes", po::value(&agent.nnodes), "number of nodes (one agent each)")(
      "node-rank", po::value(&agent.node_rank), "this node's index, 0..nnodes-1")(
      "master-addr", po::value(&agent.master_addr), "address of node 0 (required with --nnodes > 1)")(
      "master-port", po::value(&agent.master_port),
      "node 0's agent rendezvous port (default 29400 across nodes, a free one on one node)")(
      "max-restarts", po::value(&agent.max_restarts), "restart all ranks up to this many times after a failure")(
      "rdzv-timeout", po::value(&rdzv_timeout), "seconds to wait for every node's agent (default 300)")(
      "heartbeat-timeout", po::value(&heartbeat_timeout),
      "seconds without a heartbeat after which a rank or agent counts as hung (default 30)")(
      "grace-period", po::value(&grace), "seconds between SIGTERM and SIGKILL when stopping ranks (default 5)")(
      "progress-timeout", po::value(&progress_timeout),
      "seconds without a finished training step, after the first, before the job counts as stuck "
      "(default: off; set it above the longest step with its evaluation and checkpoint save)");
  opts.add_options()("help,h", "show help")(
      "set", po::value(&sets)->composing(), "override a config key: --set training_args.max_steps=10")(
      "model-dir", po::value(&model_dir), "base model directory (HF layout)")(
      "data-dir", po::value(&data_dir), "directory the data files are relative to")(
      "resume", po::value(&resume), "yes (newest complete checkpoint), N (checkpoint-N) or a checkpoint path")(
      "positional", po::value(&positional), "CONFIG, or the GLM-4 demo's DATA_DIR MODEL_DIR CONFIG [RESUME]");
  po::positional_options_description pos;
  pos.add("positional", -1);
  po::variables_map vm;
  opts.add(agent_opts);
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || positional.empty()) {
    std::cout << kUsage << opts;
    return vm.count("help") ? 0 : 2;
  }
  std::string config;
  if (positional.size() == 1) {
    config = positional[0];
  } else if (positional.size() == 3 || positional.size() == 4) {
    // finetune.py DATA_DIR MODEL_DIR CONFIG_FILE [AUTO_RESUME]
    data_dir = positional[0];
    model_dir = positional[1];
    config = positional[2];
    if (positional.size() == 4) {
      if (!resume.empty()) throw po::error("give the resume point either as --resume or as the 4th argument, not both");
      resume = positional[3];
    }
  } else {
    throw po::error("expected CONFIG.yaml or DATA_DIR MODEL_DIR CONFIG.yaml [RESUME], got " +
                    std::to_string(positional.size()) + " arguments");
  }
  if (!model_dir.empty()) sets.push_back("model_dir=" + model_dir);
  if (!data_dir.empty()) sets.push_back("data_dir=" + data_dir);
  const bool spawn = vm.count("nproc-per-node") || vm.count("nnodes") || vm.count("max-restarts");
  // One process per rank: torchrun-style env, mpirun or srun say which (none: one process).
  // Known before the config is read, so even a config error names the rank that hit it.
  comm::RankInfo info;
  if (!spawn) {
    info = comm::detect_rank_info();
    if (info.world_size > 1) launcher::g_rank_prefix = "rank " + std::to_string(info.rank) + ": ";
    g_link = launcher::WorkerLink::from_env(info.rank);
  }
  auto cfg = runtime::load_config(config, sets);
  launcher::check_data_files(cfg);
  check_run_fits_memory(cfg);
  runtime::set_log_level(cfg.training_args.log_level);
  if (!spawn && info.rank == 0 && runtime::debug_enabled()) print_debug_settings(cfg);
  if (spawn) {
    auto ms = [](double s, const char* flag) {
      if (!(s > 0)) throw po::error(std::string("--") + flag + " must be > 0 seconds");
      return std::chrono::milliseconds(int64_t(s * 1000.0));
    };
    agent.rendezvous_timeout = ms(rdzv_timeout, "rdzv-timeout");
    agent.heartbeat_timeout = ms(heartbeat_timeout, "heartbeat-timeout");
    agent.grace_period = ms(grace, "grace-period");
    if (vm.count("progress-timeout")) agent.progress_timeout = ms(progress_timeout, "progress-timeout");
    agent.config_path = config;
    // The agents compare this at rendezvous: the config file's bytes and every setting.
    std::ifstream in(config, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> parts = {bytes};
    parts.insert(parts.end(), sets.begin(), sets.end());
    agent.config_fingerprint = launcher::fingerprint(parts);
    try {
      launcher::validate(agent);
    } catch (const std::invalid_argument& e) {
      throw po::error(e.what());
    }
    std::vector<std::string> worker = {"train", config};
    for (const auto& s : sets) worker.insert(worker.end(), {"--set", s});
    if (!resume.empty()) worker.insert(worker.end(), {"--resume", resume});
    return launcher::run_agent(agent, worker);
  }
  for (const char* k : {"node-rank", "master-addr", "master-port", "rdzv-timeout", "heartbeat-timeout", "grace-period",
                        "progress-timeout"})
    if (vm.count(k))
      throw po::error(std::string("--") + k + " only applies to spawn mode: add --nproc-per-node N (and --nnodes)");
  comm::CommOptions co;
  // The device first (runtime/device.h): auto is nccl on GPUs, gloo on the CPU; it also makes
  // cuda:LOCAL_RANK the current GPU before NCCL starts.
  co.backend = runtime::comm_backend_for(cfg, runtime::resolve_device(cfg, info.local_rank), info.world_size);
  co.rendezvous_timeout = co.collective_timeout =
      std::chrono::milliseconds(int64_t(cfg.collective_timeout * 1000.0));
  if (g_link->active())
    runtime::set_progress_observer([](int64_t done, int64_t total) { g_link->progress(done, total); });
  auto comm = comm::init_comm(info, co);
  try {
    runtime::train(cfg, true, comm, resume);
  } catch (const std::exception& e) {
    // Report while this rank's connections are still open: once they close, the other ranks'
    // collectives fail and their "another rank exited" errors must not reach the agent first.
    if (g_link) {
      g_link->error(user_message(e));
      g_link.reset();
    }
    throw;
  }
  return 0;
}

int cmd_merge(const std::vector<std::string>& argv) {
  po::options_description opts("merge options");
  std::string adapter, out, base;
  std::string max_shard_text = "5000000000";  // transformers' default max_shard_size (5GB)
  opts.add_options()("help,h", "show help")("adapter", po::value(&adapter), "LoRA adapter directory")(
      "out", po::value(&out), "output directory for the merged HF model")(
      "base", po::value(&base), "base model directory (overrides the adapter's base_model_name_or_path)")(
      "max-shard-size", po::value(&max_shard_text)->default_value(max_shard_text),
      "safetensors shard limit in bytes (or 5GB, 500MiB); past it the weights are sharded with an index")(
      "overwrite", "replace OUT_DIR even when it is not an ftrun model directory");
  po::positional_options_description pos;
  pos.add("adapter", 1).add("out", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || adapter.empty() || out.empty()) {
    std::cout << kUsage << opts;
    return vm.count("help") ? 0 : 2;
  }
  const uint64_t max_shard = parse_shard_size(max_shard_text);
  if (!peft::is_adapter_dir(adapter))
    throw std::runtime_error(adapter + ": not an adapter directory (no adapter_config.json)");
  base = peft::read_adapter_dir(adapter).base_dir(base);
  if (fs::weakly_canonical(out) == fs::weakly_canonical(base) || fs::weakly_canonical(out) == fs::weakly_canonical(adapter))
    throw std::runtime_error(out + ": the output directory must differ from the base and adapter directories");
  // Replacing OUT_DIR removes what is in it: never the inputs, and only an earlier ftrun model
  // unless --overwrite says so (checked before the minutes of loading and merging).
  for (const auto& input : {base, adapter})
    if (io::path_within(out, input) || io::path_within(input, out))
      throw std::runtime_error(out + ": the output directory must not contain, or lie inside, " + input);
  io::check_replaceable(out, "model", "an ftrun model directory", vm.count("overwrite") > 0, "pass --overwrite");
  // Merged in fp32 whatever the base's dtype, so W + s*B@A is not rounded to bf16 on the way.
  auto model = models::load_pretrained(base, at::kFloat);
  auto merged = peft::merge_lora(*model, adapter);
  // Written beside the target and renamed, so an interrupted merge never leaves half a model.
  io::write_dir_atomic(out, [&](const fs::path& tmp) {
    models::save_pretrained(*model, tmp.string(), max_shard);
    // The adapter's own tokenizer when it has one (ftrun copies it into every output), else the base's.
    bool own_tok = fs::exists(fs::path(adapter) / "tokenizer_config.json");
    runtime::copy_tokenizer(own_tok ? adapter : base, tmp);
    if (fs::exists(fs::path(base) / "generation_config.json"))
      fs::copy_file(fs::path(base) / "generation_config.json", tmp / "generation_config.json",
                    fs::copy_options::overwrite_existing);
    io::write_output_marker(tmp, "model", "ftrun merge");
  });
  std::cout << "ftrun: merged " << merged.size() << " LoRA layers of " << adapter << " into " << base << " -> "
            << out << "\n";
  return 0;
}

int cmd_make_tiny(const std::vector<std::string>& argv) {
  po::options_description opts("make-tiny-model options");
  std::string out, corpus, model_type = "llama";
  std::string vocab_text = "512";
  uint64_t seed = 42;
  runtime::PretrainOptions pre;
  // The families whose entry has a tiny recipe: "llama, qwen2, chatglm3 or glm4".
  const auto names = models::tiny_family_names();
  std::string tiny_families;
  for (size_t i = 0; i < names.size(); ++i)
    tiny_families += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  opts.add_options()("help,h", "show help")("out", po::value(&out), "output directory")(
      "corpus", po::value(&corpus), "text file the tokenizer is trained on")(
      "vocab-size", po::value(&vocab_text), "sentencepiece vocabulary size (before specials)")(
      "seed", po::value(&seed), "weight seed")("model-type", po::value(&model_type), tiny_families.c_str())(
      "pretrain-steps", po::value(&pre.steps)->default_value(pre.steps),
      "next-token pre-training steps on the corpus (0 = leave the weights random)")(
      "overwrite", "replace OUT_DIR even when it is not an ftrun model directory");
  po::positional_options_description pos;
  pos.add("out", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help") || out.empty() || corpus.empty()) {
    std::cout << kUsage << opts;
    return vm.count("help") ? 0 : 2;
  }
  if (std::find(names.begin(), names.end(), model_type) == names.end()) {
    std::cerr << "ftrun: --model-type must be " << tiny_families << " (got '" << model_type << "')\n";
    return 2;
  }
  // sentencepiece needs room for its own pieces (<unk>, <s>, </s>) and at least one more; with
  // a size it cannot reach it used to fail with its raw internal message (--vocab-size 1).
  constexpr int kMinVocab = 4, kMaxVocab = 1'000'000;
  int vocab = 0;
  if (vocab_text.empty() || vocab_text.size() > 9 || vocab_text.find_first_not_of("0123456789") != std::string::npos ||
      (vocab = std::stoi(vocab_text)) < kMinVocab || vocab > kMaxVocab)
    throw po::error("--vocab-size must be a whole number from " + std::to_string(kMinVocab) + " to " +
                    std::to_string(kMaxVocab) + ", got '" + vocab_text + "'");
  {
    // Checked here with the OS's reason: the trainer says only "not found", also for a directory.
    std::error_code ec;
    if (fs::is_directory(corpus, ec)) throw po::error("--corpus " + corpus + ": is a directory, expected a text file");
    std::ifstream probe(corpus);
    if (!probe) throw po::error("--corpus " + corpus + ": cannot open: " + std::strerror(errno));
  }
  const models::TinyRecipe& fam = models::find_family(model_type)->tiny;
  io::check_replaceable(out, "model", "an ftrun model directory", vm.count("overwrite") > 0, "pass --overwrite");
  models::TinySpec spec;
  // Written beside the target and renamed (io::write_dir_atomic), so an interrupted build never
  // leaves half a model; a temp directory a killed build left is reused.
  io::write_dir_atomic(out, [&](const fs::path& tmp_dir) {
    const std::string tmp = tmp_dir.string();
    // The family's special tokens (its entry's tiny recipe) go after the sentencepiece pieces.
    try {
      data::train_tokenizer(corpus, tmp, vocab, fam.specials);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(tokenizer_training_error(e.what(), corpus, vocab));
    }
    {
      auto path = fs::path(tmp) / "tokenizer_config.json";
      nlohmann::json tc = io::read_json_file(path);
      for (const char* k : {"bos_token", "eos_token", "pad_token"}) tc.erase(k);
      if (!fam.bos.empty()) tc["bos_token"] = fam.bos;
      tc["eos_token"] = fam.eos;
      tc["pad_token"] = fam.pad;
      io::write_json_atomic(path, tc);
    }
    auto tok = data::load_tokenizer(tmp);
    // A corpus too small for the size asked for yields fewer pieces (hard_vocab_limit=false):
    // said, not silent.
    const int64_t pieces = tok->vocab_size() - int64_t(fam.specials.size());
    if (vm.count("vocab-size") && pieces < vocab)
      std::cerr << "ftrun: note: " << corpus << " yields only " << pieces << " sentencepiece pieces, fewer than --vocab-size "
                << vocab << "\n";
    spec.model_type = model_type;
    spec.vocab_size = tok->vocab_size();
    spec.bos_token_id = fam.bos.empty() ? -1 : tok->bos_id();
    spec.eos_token_id = tok->eos_id();
    spec.pad_token_id = tok->pad_id();
    for (const auto& e : fam.extra_eos) spec.extra_eos_token_ids.push_back(tok->special_id(e));
    spec.seed = seed;
    models::write_tiny_model(tmp, spec);
    if (pre.steps > 0) {
      // Pre-train so the demo fine-tunes a base that already models the text.
      auto model = models::load_pretrained(tmp);
      pre.seed = seed;
      double loss = runtime::pretrain_on_text(*model, *tok, corpus, tok->special_id(fam.first), pre);
      models::save_pretrained(*model, tmp);
      std::cout << "ftrun: pre-trained the tiny model for " << pre.steps << " steps (final loss " << loss << ")\n";
    }
    io::write_output_marker(tmp_dir, "model", "ftrun make-tiny-model");
  });
  std::cout << "ftrun: wrote tiny " << model_type << " model (vocab " << spec.vocab_size << ") to " << out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  apply_env_defaults(argv);
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--debug") {
      g_debug = true;
      continue;
    }
    args.push_back(argv[i]);
  }
  if (const char* d = std::getenv("FTRUN_DEBUG"); d && *d && std::string(d) != "0") g_debug = true;
  if (g_debug) ::setenv("FTRUN_DEBUG", "1", 1);  // ranks an agent spawns keep it
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  try {
    auto sub = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (sub == "generate") return launcher::cmd_generate(rest);
    if (sub == "eval") return launcher::cmd_eval(rest);
    if (sub == "chat") return launcher::cmd_chat(rest);
    if (sub == "report") return launcher::cmd_report(rest);
    if (sub == "data") return launcher::cmd_data(rest);
    if (sub == "make-tiny-model") return cmd_make_tiny(rest);
    if (sub == "merge") return cmd_merge(rest);
    if (sub == "train") return cmd_train(rest);
    return cmd_train(args);
  } catch (const po::error& e) {
    std::cerr << "ftrun: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    const std::string msg = user_message(e);
    std::cerr << "ftrun: " << launcher::g_rank_prefix << "error: " << msg << "\n";
    if (g_link) {
      g_link->error(msg);
      g_link.reset();  // delivers the report before the process ends
    }
    return 1;
  }
}
