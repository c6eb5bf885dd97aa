// Checkpoint writing, discovery and resume (see checkpoint.h).
#include "runtime/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "models/safetensors.h"

namespace ftrun::runtime {

void copy_tokenizer(const std::string& model_dir, const fs::path& dst) {
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "tokenizer.json",
                        "special_tokens_map.json", "vocab.json", "merges.txt"}) {
    auto src = fs::path(model_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, dst / f, fs::copy_options::overwrite_existing);
  }
}

void write_json(const fs::path& p, const nlohmann::json& j) {
  std::ofstream out(p);
  out << j.dump(2) << "\n";
  out.close();
  if (!out) throw std::runtime_error(p.string() + ": write failed");
}

namespace {

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(p.string() + ": cannot open for fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error(p.string() + ": fsync failed");
}

void fsync_tree(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) fsync_path(e.path());
  fsync_path(dir);
}

std::string rank_file(int rank) { return "rank-" + std::to_string(rank) + ".safetensors"; }

}  // namespace

fs::path checkpoint_tmp_dir(const std::string& output_dir, int64_t step) {
  return fs::path(output_dir) / (".checkpoint-" + std::to_string(step) + ".tmp");
}

void save_rank_state(const fs::path& dir, const sharding::ZeroEngine& engine, int rank) {
  fs::create_directories(dir / "optimizer");
  fs::create_directories(dir / "rng");
  st::NamedTensors tensors;
  nlohmann::json ranges = nlohmann::json::object();
  for (const auto& s : engine.export_optimizer()) {
    auto u = std::to_string(s.unit);
    tensors.emplace_back("unit." + u + ".exp_avg", s.exp_avg);
    tensors.emplace_back("unit." + u + ".exp_avg_sq", s.exp_avg_sq);
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
    write_json(dir / "optimizer" / "layout.json", {{"units", units}});
  }
}

fs::path finish_checkpoint(const Config& cfg, const fs::path& tmp, int64_t step, const nlohmann::json& state) {
  fs::path out(cfg.training_args.output_dir);
  auto final_dir = out / ("checkpoint-" + std::to_string(step));
  copy_tokenizer(cfg.model_dir, tmp);
  write_json(tmp / "trainer_state.json", state);
  {
    std::ofstream marker(tmp / "COMPLETE");
    marker << step << "\n";
    marker.close();
    if (!marker) throw std::runtime_error((tmp / "COMPLETE").string() + ": write failed");
  }
  fsync_tree(tmp);
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_path(out);
  auto limit = cfg.training_args.save_total_limit;
  if (limit > 0) {
    auto found = complete_checkpoints(out.string());
    for (size_t i = 0; i + size_t(limit) < found.size(); ++i)
      fs::remove_all(out / ("checkpoint-" + std::to_string(found[i])));
  }
  return final_dir;
}

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
  write_json(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
  write_json(dir / "config.json", model.config().raw);
}

std::vector<int64_t> complete_checkpoints(const std::string& output_dir) {
  std::vector<int64_t> steps;
  if (!fs::is_directory(output_dir)) return steps;
  for (const auto& e : fs::directory_iterator(output_dir)) {
    auto name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || !fs::exists(e.path() / "COMPLETE")) continue;
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
    return fs::path(output_dir) / ("checkpoint-" + std::to_string(found.back()));
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
  if (!fs::exists(dir / "COMPLETE"))
    throw std::runtime_error("--resume " + arg + ": " + dir.string() + " is incomplete (no COMPLETE marker: "
                             "the save was interrupted); " + listing(output_dir));
  return dir;
}

std::vector<std::string> check_resume_compatible(const Config& cfg, const nlohmann::json& state,
                                                 const nlohmann::json& model_config) {
  std::vector<std::string> notes;
  auto differ = [&](const std::string& what, const nlohmann::json& then, const nlohmann::json& now) {
    throw std::runtime_error("cannot resume: " + what + " changed from " + then.dump() + " to " + now.dump());
  };
  if (state.value("model_config", nlohmann::json()) != model_config)
    differ("the base model (config.json of " + cfg.model_dir + ")", state.value("model_config", nlohmann::json()).value("model_type", ""),
           model_config.value("model_type", "") + " with other settings");
  auto old_peft = state.value("peft_config", nlohmann::json());
  const auto& new_peft = cfg.peft_config;
  auto type_of = [](const nlohmann::json& p) { return p.is_null() ? std::string("FULL") : p.value("peft_type", ""); };
  if (type_of(old_peft) != type_of(new_peft)) differ("the strategy", type_of(old_peft), type_of(new_peft));
  for (const char* k : {"r", "lora_alpha", "target_modules", "use_rslora", "num_virtual_tokens", "pre_seq_len",
                        "prefix_projection", "encoder_hidden_size", "token_dim"}) {
    auto a = old_peft.is_object() && old_peft.contains(k) ? old_peft[k] : nlohmann::json();
    auto b = new_peft.is_object() && new_peft.contains(k) ? new_peft[k] : nlohmann::json();
    if (a != b) differ("peft_config." + std::string(k), a, b);
  }
  auto old_args = state.value("training_args", nlohmann::json::object());
  for (const auto& kv : old_args.items()) {
    nlohmann::json now;
    const auto& t = cfg.training_args;
    if (kv.key() == "max_steps") now = t.max_steps;
    else if (kv.key() == "learning_rate") now = t.learning_rate;
    else if (kv.key() == "per_device_train_batch_size") now = t.per_device_train_batch_size;
    else if (kv.key() == "gradient_accumulation_steps") now = t.gradient_accumulation_steps;
    else if (kv.key() == "seed") now = t.seed;
    else continue;
    if (now != kv.value()) notes.push_back("training_args." + kv.key() + " changed from " + kv.value().dump() + " to " + now.dump());
  }
  return notes;
}

void load_rank_state(const fs::path& dir, sharding::ZeroEngine& engine, int64_t steps, int rank) {
  auto opt_dir = dir / "optimizer";
  nlohmann::json layout;
  {
    std::ifstream in(opt_dir / "layout.json");
    if (!in) throw std::runtime_error((opt_dir / "layout.json").string() + ": missing (not an ftrun checkpoint?)");
    in >> layout;
  }
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
    auto out = torch::empty({hi - lo});
    int64_t covered = 0;
    for (const auto& s : sources) {
      auto it = s.ranges.find(unit);
      if (it == s.ranges.end()) continue;
      int64_t a = std::max(lo, it->second.first), b = std::min(hi, it->second.second);
      if (a >= b) continue;
      auto t = s.file->get("unit." + std::to_string(unit) + "." + which);
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
