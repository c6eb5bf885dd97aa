// Checkpoint schema, the collective save protocol, discovery and resume (see checkpoint.h).
#include "runtime/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <set>
#include <sstream>

#include "io/file.h"
#include "models/safetensors.h"

namespace ftrun::runtime {

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kCompleteFile = "COMPLETE";

std::string rank_file(int rank) { return "rank-" + std::to_string(rank) + ".safetensors"; }

std::string checkpoint_name(int64_t step) { return "checkpoint-" + std::to_string(step); }

fs::path checkpoint_tmp_dir(const std::string& output_dir, int64_t step) {
  return fs::path(output_dir) / ("." + checkpoint_name(step) + ".tmp");
}

}  // namespace

nlohmann::json TrainerState::to_json() const {
  return {{"global_step", global_step}, {"position", position},         {"epoch", epoch},
          {"log_history", log_history}, {"world_size", world_size},     {"zero_stage", zero_stage},
          {"strategy", strategy},       {"peft_config", peft_config},   {"model_config", model_config},
          {"training_args", training_args}, {"seed", seed}};
}

TrainerState TrainerState::from_json(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) throw std::runtime_error(path + ": expected a JSON object");
  auto need = [&](const char* key) -> const nlohmann::json& {
    auto it = j.find(key);
    if (it == j.end()) throw std::runtime_error(path + ": missing key '" + key + "'");
    return *it;
  };
  auto integer = [&](const char* key, const nlohmann::json& v) {
    if (!v.is_number_integer()) throw std::runtime_error(path + ": '" + key + "' must be an integer, got " + v.dump());
    return v.get<int64_t>();
  };
  auto opt = [&](const char* key) { return j.contains(key) ? j.at(key) : nlohmann::json(); };
  TrainerState s;
  s.global_step = integer("global_step", need("global_step"));
  s.position = integer("position", need("position"));
  if (j.contains("epoch") && j["epoch"].is_number()) s.epoch = j["epoch"].get<double>();
  if (j.contains("log_history")) {
    if (!j["log_history"].is_array()) throw std::runtime_error(path + ": 'log_history' must be an array");
    s.log_history = j["log_history"];
  }
  if (j.contains("world_size")) s.world_size = int(integer("world_size", j["world_size"]));
  if (j.contains("zero_stage")) s.zero_stage = int(integer("zero_stage", j["zero_stage"]));
  if (j.contains("strategy") && j["strategy"].is_string()) s.strategy = j["strategy"].get<std::string>();
  s.peft_config = opt("peft_config");
  s.model_config = opt("model_config");
  if (j.contains("training_args") && j["training_args"].is_object()) s.training_args = j["training_args"];
  if (j.contains("seed")) s.seed = integer("seed", j["seed"]);
  return s;
}

nlohmann::json resume_training_args(const TrainingArgs& args) {
  return {{"max_steps", args.max_steps},
          {"learning_rate", args.learning_rate},
          {"per_device_train_batch_size", args.per_device_train_batch_size},
          {"gradient_accumulation_steps", args.gradient_accumulation_steps},
          {"seed", args.seed}};
}

TrainerState read_trainer_state(const fs::path& checkpoint_dir) {
  const auto path = checkpoint_dir / kStateFile;
  if (!fs::exists(path)) throw std::runtime_error(path.string() + ": missing");
  return TrainerState::from_json(io::read_json_file(path), path.string());
}

void copy_tokenizer(const std::string& model_dir, const fs::path& dst) {
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "tokenizer.json",
                        "special_tokens_map.json", "vocab.json", "merges.txt"}) {
    auto src = fs::path(model_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, dst / f, fs::copy_options::overwrite_existing);
  }
}

namespace {

// Each rank: its optimizer shard and RNG state into dir (rank 0 also the layout).
void save_rank_state(const fs::path& dir, const sharding::ZeroEngine& engine, int rank) {
  fs::create_directories(dir / "optimizer");
  fs::create_directories(dir / "rng");
  st::NamedTensors tensors;
  nlohmann::json ranges = nlohmann::json::object();
  for (const auto& s : engine.export_optimizer()) {
    auto u = std::to_string(s.unit);
    tensors.emplace_back("unit." + u + ".exp_avg", s.exp_avg);
    tensors.emplace_back("unit." + u + ".exp_avg_sq", s.exp_avg_sq);
    if (s.master.defined()) tensors.emplace_back("unit." + u + ".master", s.master);  // bf16 working weights
    ranges[u] = {s.lo, s.hi};
  }
  st::save((dir / "optimizer" / rank_file(rank)).string(), tensors,
           {{"format", "pt"}, {"ftrun_ranges", ranges.dump()}});
  auto rng = at::detail::getDefaultCPUGenerator().get_state();
  st::save((dir / "rng" / rank_file(rank)).string(), {{"cpu", rng}});
  if (rank == 0) {
    nlohmann::json units = nlohmann::json::array();
    for (const auto& l : engine.layout()) {
      nlohmann::json params = nlohmann::json::array();
      for (const auto& p : l.params) params.push_back({{"name", std::get<0>(p)}, {"offset", std::get<1>(p)}, {"numel", std::get<2>(p)}});
      units.push_back({{"unit", l.unit}, {"numel", l.numel}, {"params", params}});
    }
    io::write_json_atomic(dir / "optimizer" / "layout.json", {{"units", units}});
  }
}

// Rank 0, after every rank wrote: trainer_state.json, tokenizer, fsync, COMPLETE, rename,
// save_total_limit rotation. Returns the final directory.
fs::path finish_checkpoint(const Config& cfg, const fs::path& tmp, const TrainerState& state) {
  fs::path out(cfg.training_args.output_dir);
  auto final_dir = out / checkpoint_name(state.global_step);
  copy_tokenizer(cfg.model_dir, tmp);
  io::write_json_atomic(tmp / kStateFile, state.to_json());
  io::write_file_atomic(tmp / kCompleteFile, std::to_string(state.global_step) + "\n");
  io::fsync_tree(tmp);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  io::fsync_path(out);
  auto limit = cfg.training_args.save_total_limit;
  if (limit > 0) {
    auto found = complete_checkpoints(out.string());
    for (size_t i = 0; i + size_t(limit) < found.size(); ++i) fs::remove_all(out / checkpoint_name(found[i]));
  }
  return final_dir;
}

// Full fine-tuning under ZeRO-3: HF shards written unit by unit (collective; rank 0 writes).
void save_model_streaming(sharding::ZeroEngine& engine, models::CausalLM& model, const fs::path& dir, bool write) {
  std::vector<std::vector<std::string>> files;
  uint64_t total = 0;
  engine.for_each_unit_full([&](const sharding::ZeroEngine::NamedTensors& tensors) {
    if (!write || tensors.empty()) return;
    st::NamedTensors out;
    std::vector<std::string> names;
    for (const auto& kv : tensors) {
      out.emplace_back(kv.first, kv.second.detach().contiguous());
      names.push_back(kv.first);
      total += uint64_t(kv.second.numel()) * kv.second.element_size();
    }
    st::save((dir / ("unit-" + std::to_string(files.size()) + ".tmp.safetensors")).string(), out);
    files.push_back(names);
  });
  if (!write) return;
  nlohmann::json weight_map = nlohmann::json::object();
  char name[64];
  for (size_t i = 0; i < files.size(); ++i) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, files.size());
    fs::rename(dir / ("unit-" + std::to_string(i) + ".tmp.safetensors"), dir / name);
    for (const auto& n : files[i]) weight_map[n] = name;
  }
  io::write_json_atomic(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
  const auto dtype = model.parameters().empty() ? at::kFloat : model.parameters().front().scalar_type();
  io::write_json_atomic(dir / "config.json", models::config_for_save(model, dtype));
}


// The weights into dir: streamed unit by unit for a whole model at stage 3, else gathered
// (with_full_trainable) and written by the strategy on rank 0.
void save_weights(const SaveContext& ctx, const fs::path& dir) {
  const int rank = ctx.comm.rank();
  if (ctx.strategy.trains_all_weights() && ctx.zero_stage == 3) {
    save_model_streaming(ctx.engine, ctx.model, dir, rank == 0);
  } else {
    ctx.engine.with_full_trainable([&] {
      if (rank == 0) ctx.strategy.save(dir.string(), ctx.cfg.model_dir);
    });
  }
}

// Read once: the crash-safety test's fault injection (die between writing and COMPLETE).
int64_t kill_in_save_step() {
  static const int64_t step = [] {
    const char* v = std::getenv("FTRUN_TEST_KILL_IN_SAVE");
    return v ? std::atoll(v) : int64_t(-1);
  }();
  return step;
}

}  // namespace

fs::path save_checkpoint(const SaveContext& ctx, const TrainerState& state) {
  const int rank = ctx.comm.rank();
  const fs::path dir = checkpoint_tmp_dir(ctx.cfg.training_args.output_dir, state.global_step);
  if (rank == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ctx.comm.barrier();
  save_weights(ctx, dir);
  save_rank_state(dir, ctx.engine, rank);
  ctx.comm.barrier();
  if (state.global_step == kill_in_save_step()) std::raise(SIGKILL);
  fs::path final_dir;
  if (rank == 0) final_dir = finish_checkpoint(ctx.cfg, dir, state);
  ctx.comm.barrier();
  return final_dir;
}

void save_final(const SaveContext& ctx) {
  const int rank = ctx.comm.rank();
  const fs::path dir(ctx.cfg.training_args.output_dir);
  if (rank == 0) fs::create_directories(dir);
  ctx.comm.barrier();
  save_weights(ctx, dir);
  if (rank == 0) copy_tokenizer(ctx.cfg.model_dir, dir);
  ctx.comm.barrier();
}

std::vector<int64_t> complete_checkpoints(const std::string& output_dir) {
  std::vector<int64_t> steps;
  if (!fs::is_directory(output_dir)) return steps;
  for (const auto& e : fs::directory_iterator(output_dir)) {
    auto name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || !fs::exists(e.path() / kCompleteFile)) continue;
    auto digits = name.substr(11);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    steps.push_back(std::stoll(digits));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

namespace {

std::string listing(const std::string& output_dir) {
  auto found = complete_checkpoints(output_dir);
  if (found.empty()) return "there are no complete checkpoints in " + output_dir;
  std::string s = "complete checkpoints in " + output_dir + ":";
  for (auto n : found) s += " checkpoint-" + std::to_string(n);
  return s;
}

}  // namespace

std::optional<fs::path> resolve_resume(const std::string& arg, const std::string& output_dir, std::string* message) {
  std::string lower = arg;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower.empty() || lower == "no") return std::nullopt;
  if (lower == "yes") {
    auto found = complete_checkpoints(output_dir);
    if (found.empty()) {
      if (message) *message = "--resume yes: no complete checkpoint in " + output_dir + "; starting fresh";
      return std::nullopt;
    }
    return fs::path(output_dir) / checkpoint_name(found.back());
  }
  fs::path dir;
  if (std::all_of(arg.begin(), arg.end(), ::isdigit)) {
    if (std::stoll(arg) == 0)
      throw std::runtime_error("--resume 0: there is no checkpoint-0 (the GLM-4 demo silently skipped training "
                               "here); use --resume yes or a step number; " + listing(output_dir));
    dir = fs::path(output_dir) / ("checkpoint-" + arg);
  } else {
    dir = arg;
  }
  if (!fs::is_directory(dir))
    throw std::runtime_error("--resume " + arg + ": " + dir.string() + " does not exist; " + listing(output_dir));
  if (!fs::exists(dir / kCompleteFile))
    throw std::runtime_error("--resume " + arg + ": " + dir.string() + " is incomplete (no COMPLETE marker: "
                             "the save was interrupted); " + listing(output_dir));
  return dir;
}

std::vector<std::string> check_resume_compatible(const Config& cfg, const peft::Strategy& strategy,
                                                 const TrainerState& state, const nlohmann::json& model_config) {
  std::vector<std::string> notes;
  auto differ = [&](const std::string& what, const nlohmann::json& then, const nlohmann::json& now) {
    throw std::runtime_error("cannot resume: " + what + " changed from " + then.dump() + " to " + now.dump());
  };
  if (state.model_config != model_config)
    differ("the base model (config.json of " + cfg.model_dir + ")",
           state.model_config.is_object() ? state.model_config.value("model_type", "") : "",
           model_config.value("model_type", "") + " with other settings");
  const auto& old_peft = state.peft_config;
  const auto& new_peft = cfg.peft_config;
  auto type_of = [](const nlohmann::json& p) { return p.is_null() ? std::string("FULL") : p.value("peft_type", ""); };
  if (type_of(old_peft) != type_of(new_peft)) differ("the strategy", type_of(old_peft), type_of(new_peft));
  for (const auto& k : strategy.resume_keys()) {
    auto a = old_peft.is_object() && old_peft.contains(k) ? old_peft[k] : nlohmann::json();
    auto b = new_peft.is_object() && new_peft.contains(k) ? new_peft[k] : nlohmann::json();
    if (a != b) differ("peft_config." + k, a, b);
  }
  const auto now_args = resume_training_args(cfg.training_args);
  for (const auto& kv : state.training_args.items()) {
    if (!now_args.contains(kv.key())) continue;
    const auto& now = now_args[kv.key()];
    if (now != kv.value()) notes.push_back("training_args." + kv.key() + " changed from " + kv.value().dump() + " to " + now.dump());
  }
  return notes;
}

void load_rank_state(const fs::path& dir, sharding::ZeroEngine& engine, int64_t steps, int rank) {
  auto opt_dir = dir / "optimizer";
  if (!fs::exists(opt_dir / "layout.json"))
    throw std::runtime_error((opt_dir / "layout.json").string() + ": missing (not an ftrun checkpoint?)");
  const nlohmann::json layout = io::read_json_file(opt_dir / "layout.json");
  // The saved parameter layout must be the one this run builds, unit by unit.
  std::map<int64_t, nlohmann::json> saved;
  for (const auto& u : layout["units"]) saved[u["unit"].get<int64_t>()] = u;
  for (const auto& l : engine.layout()) {
    auto it = saved.find(l.unit);
    if (it == saved.end())
      throw std::runtime_error((opt_dir / "layout.json").string() + ": no optimizer state for unit " + std::to_string(l.unit));
    const auto& params = it->second["params"];
    if (params.size() != l.params.size())
      throw std::runtime_error((opt_dir / "layout.json").string() + ": unit " + std::to_string(l.unit) + " has " +
                               std::to_string(params.size()) + " trainable tensors, this run " + std::to_string(l.params.size()));
    for (size_t i = 0; i < l.params.size(); ++i)
      if (params[i]["name"] != std::get<0>(l.params[i]) || params[i]["numel"] != std::get<2>(l.params[i]))
        throw std::runtime_error((opt_dir / "layout.json").string() + ": trainable tensor " + params[i]["name"].get<std::string>() +
                                 " does not match this run's " + std::get<0>(l.params[i]));
  }
  struct Source {
    std::shared_ptr<st::File> file;
    std::map<int64_t, std::pair<int64_t, int64_t>> ranges;
  };
  std::vector<Source> sources;
  for (const auto& e : fs::directory_iterator(opt_dir)) {
    if (e.path().extension() != ".safetensors") continue;
    Source s;
    s.file = st::File::open(e.path().string());
    auto meta = s.file->metadata();
    if (!meta.count("ftrun_ranges")) throw std::runtime_error(e.path().string() + ": no ftrun_ranges metadata");
    auto ranges = nlohmann::json::parse(meta.at("ftrun_ranges"));
    for (const auto& kv : ranges.items())
      s.ranges[std::stoll(kv.key())] = {kv.value()[0].get<int64_t>(), kv.value()[1].get<int64_t>()};
    sources.push_back(s);
  }
  engine.import_optimizer(steps, [&](int64_t unit, const std::string& which, int64_t lo, int64_t hi) {
    const std::string name = "unit." + std::to_string(unit) + "." + which;
    // fp32 masters exist only in checkpoints of bf16 full fine-tuning; without them (an
    // fp32 run's checkpoint) the masters start from the weights as loaded.
    if (which == "master" &&
        std::none_of(sources.begin(), sources.end(), [&](const Source& s) { return s.file->contains(name); }))
      return at::Tensor();
    auto out = torch::empty({hi - lo});
    int64_t covered = 0;
    for (const auto& s : sources) {
      auto it = s.ranges.find(unit);
      if (it == s.ranges.end()) continue;
      int64_t a = std::max(lo, it->second.first), b = std::min(hi, it->second.second);
      if (a >= b) continue;
      auto t = s.file->get(name);
      out.narrow(0, a - lo, b - a).copy_(t.narrow(0, a - it->second.first, b - a));
      covered += b - a;
    }
    // Ranges of replicated (stage 0) state may come from several files; each covers it whole.
    if (covered < hi - lo) return torch::empty({0});
    return out;
  });
  auto rng_file = dir / "rng" / rank_file(rank);
  if (fs::exists(rng_file)) {
    auto f = st::File::open(rng_file.string());
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(f->get("cpu"));
  }
}

}  // namespace ftrun::runtime
