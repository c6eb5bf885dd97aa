// Checkpoint schema, the collective save protocol, discovery and resume (see checkpoint.h).
#include "runtime/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>

#include "io/checksum.h"
#include "io/file.h"
#include "io/output.h"
#include "models/safetensors.h"
#include "runtime/device.h"

namespace ftrun::runtime {

namespace {

// An integer of a JSON file ftrun wrote. nlohmann's get<int64_t>() converts a float such as
// 9.7e27 by an undefined cast (UBSan, fuzz find): anything but an integer in int64's range is a
// type error like nlohmann's own, so the callers' catch blocks name the file.
int64_t json_int64(const nlohmann::json& v) {
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
    throw nlohmann::json::type_error::create(302, "expected an integer, got " + v.dump(), nullptr);
  return v.get<int64_t>();
}

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kCompleteFile = "COMPLETE";
constexpr const char* kFinalTmp = ".final.tmp";  // save_final's temp directory in output_dir

std::string rank_file(int rank) { return "rank-" + std::to_string(rank) + ".safetensors"; }

std::string checkpoint_name(int64_t step) { return "checkpoint-" + std::to_string(step); }

fs::path checkpoint_tmp_dir(const std::string& output_dir, int64_t step) {
  return fs::path(output_dir) / ("." + checkpoint_name(step) + ".tmp");
}

// COMPLETE's text: the step on line 1 (all that earlier versions wrote, and what they read),
// then one line per file of the checkpoint, sorted by path:
//   xxh64 <16 hex digits> <size in bytes> <path relative to the checkpoint>
std::string complete_text(const fs::path& dir, int64_t step) {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != kCompleteFile)
      files.push_back(fs::relative(e.path(), dir).generic_string());
  std::sort(files.begin(), files.end());
  std::string text = std::to_string(step) + "\n";
  for (const auto& f : files)
    text += "xxh64 " + io::hex64(io::xxh64_file(dir / f)) + " " + std::to_string(fs::file_size(dir / f)) + " " + f + "\n";
  return text;
}

}  // namespace

void mark_complete(const fs::path& dir, int64_t step) {
  io::write_file_atomic(dir / kCompleteFile, complete_text(dir, step));
}

nlohmann::json TrainerState::to_json() const {
  nlohmann::json j = {{"global_step", global_step}, {"position", position},         {"epoch", epoch},
          {"log_history", log_history}, {"world_size", world_size},     {"zero_stage", zero_stage},
          {"strategy", strategy},       {"peft_config", peft_config},   {"model_config", model_config},
          {"training_args", training_args}, {"seed", seed}};
  if (packing) j["packing"] = true;
  return j;
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
  // Range-checked before narrowing: int(4294967297) would read as 1 (fuzz find).
  auto small = [&](const char* key, int64_t lo, int64_t hi) {
    int64_t v = integer(key, j[key]);
    if (v < lo || v > hi)
      throw std::runtime_error(path + ": '" + key + "' must be from " + std::to_string(lo) + " to " +
                               std::to_string(hi) + ", got " + std::to_string(v));
    return int(v);
  };
  if (j.contains("world_size")) s.world_size = small("world_size", 1, 1 << 20);
  if (j.contains("zero_stage")) s.zero_stage = small("zero_stage", 0, 3);
  if (j.contains("strategy") && j["strategy"].is_string()) s.strategy = j["strategy"].get<std::string>();
  s.peft_config = opt("peft_config");
  s.model_config = opt("model_config");
  if (j.contains("training_args") && j["training_args"].is_object()) s.training_args = j["training_args"];
  if (j.contains("seed")) s.seed = integer("seed", j["seed"]);
  if (j.contains("packing")) {
    if (!j["packing"].is_boolean()) throw std::runtime_error(path + ": 'packing' must be true or false, got " + j["packing"].dump());
    s.packing = j["packing"].get<bool>();
  }
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
void save_rank_state(const fs::path& dir, const sharding::ZeroEngine& engine, int rank, const c10::Device& device) {
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
  // The CPU generator (LoRA init, data order, dropout on the CPU) and, on a GPU, the device's
  // (dropout there): HF's rng_state.pth keeps both, so a resume stays exact on either.
  st::NamedTensors rng = {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}};
  if (device.is_cuda()) rng.emplace_back("cuda", cuda_rng_state(device));
  st::save((dir / "rng" / rank_file(rank)).string(), rng);
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
  mark_complete(tmp, state.global_step);
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
  save_rank_state(dir, ctx.engine, rank, ctx.device);
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
  // Written whole into a temp directory beside the files it replaces (output_dir also holds the
  // checkpoints, so it is not itself renamed), then each file renamed into place: a failed or
  // killed save never leaves a half-written file there. A temp directory a killed save left is
  // reused.
  const fs::path tmp = dir / kFinalTmp;
  if (rank == 0) {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  ctx.comm.barrier();
  save_weights(ctx, tmp);
  if (rank == 0) {
    copy_tokenizer(ctx.cfg.model_dir, tmp);
    io::fsync_tree(tmp);
    std::set<std::string> written;
    for (const auto& e : fs::directory_iterator(tmp)) written.insert(e.path().filename().string());
    // Weight files of an earlier final save that this one does not write (another sharding).
    for (const auto& e : fs::directory_iterator(dir)) {
      const auto name = e.path().filename().string();
      const bool weights = name.rfind("model", 0) == 0 && (e.path().extension() == ".safetensors" ||
                                                          name == "model.safetensors.index.json");
      if (weights && e.is_regular_file() && !written.count(name)) fs::remove(e.path());
    }
    for (const auto& name : written) {
      if (fs::is_directory(dir / name)) fs::remove_all(dir / name);
      fs::rename(tmp / name, dir / name);
    }
    fs::remove_all(tmp);
    io::fsync_dir(dir);
  }
  ctx.comm.barrier();
}

namespace {

// A training output_dir from before output markers: what ftrun itself puts there.
bool legacy_training_output(const fs::path& dir) {
  if (fs::exists(dir / "metrics.jsonl") || fs::is_directory(dir / ".ftrun_cache")) return true;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    if (e.is_directory() && name.rfind("checkpoint-", 0) == 0 && name.size() > 11 &&
        std::all_of(name.begin() + 11, name.end(), ::isdigit))
      return true;
  }
  return false;
}

}  // namespace

void prepare_output_dir(const Config& cfg, comm::Comm& comm) {
  const auto& out = cfg.training_args.output_dir;
  if (out.empty())
    throw std::runtime_error("training_args.output_dir is empty: set the directory the checkpoints and the result "
                             "go to (nothing was written)");
  const std::pair<std::string, std::string> inputs[] = {
      {cfg.model_dir, "the base model directory (model_dir"},
      {cfg.adapter_name_or_path, "the adapter being continued (adapter_name_or_path"}};
  for (const auto& [input, what] : inputs) {
    if (input.empty() || !io::path_within(out, input)) continue;
    const bool same = io::path_within(input, out);
    throw std::runtime_error("training_args.output_dir " + out + " is " + (same ? "" : "inside ") + what + " " + input +
                             "): training would write over its files; choose another output_dir (nothing was written)");
  }
  io::check_replaceable(out, "training", "an ftrun training output", cfg.training_args.overwrite_output_dir,
                        "set training_args.overwrite_output_dir: true", legacy_training_output);
  comm.barrier();  // every rank has looked before rank 0 writes
  if (comm.rank() == 0) {
    fs::create_directories(out);
    if (io::output_kind(out) != "training") io::write_output_marker(out, "training", "ftrun training");
  }
  comm.barrier();
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

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 18 && std::all_of(s.begin(), s.end(), ::isdigit);
}

const char* const kChanged = " (the file changed after the checkpoint was written)";

// COMPLETE's per-file checksums (complete_text) against the files: "" when every listed file
// matches, else what is wrong, naming the file. *step is COMPLETE's line 1; *legacy is set when
// no checksums are recorded (a checkpoint of an ftrun before them).
std::string check_checksums(const fs::path& dir, int64_t* step, bool* legacy) {
  const auto path = dir / kCompleteFile;
  std::string text;
  try {
    text = io::read_text_file(path, "checkpoint marker");
  } catch (const std::exception& e) {
    return e.what();
  }
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  if (!all_digits(line)) return path.string() + ": line 1 must be the step number, got '" + line + "'";
  *step = std::stoll(line);
  std::set<std::string> listed;
  int number = 1;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string algo, hash, rel;
    uint64_t size = 0;
    ls >> algo >> hash >> size;
    if (ls) ls.get();
    if (ls) std::getline(ls, rel);
    if (algo != "xxh64" || hash.size() != 16 || rel.empty())
      return path.string() + ": line " + std::to_string(number) + " is not 'xxh64 <hash> <size> <file>': " + line;
    listed.insert(rel);
    const auto f = dir / rel;
    std::error_code ec;
    if (!fs::is_regular_file(f, ec)) return f.string() + ": missing (COMPLETE lists it)";
    const auto actual = fs::file_size(f, ec);
    if (actual != size)
      return f.string() + ": " + std::to_string(actual) + " bytes, COMPLETE says " + std::to_string(size) + kChanged;
    std::string now;
    try {
      now = io::hex64(io::xxh64_file(f));
    } catch (const std::exception& e) {
      return e.what();
    }
    if (now != hash) return f.string() + ": checksum xxh64 " + now + ", COMPLETE says " + hash + kChanged;
  }
  *legacy = listed.empty();
  if (*legacy) return "";
  // A resume loads every file of optimizer/ and rng/ it finds: one COMPLETE does not list (a
  // shard copied in from another run) would be loaded, so it is damage too.
  for (const char* sub : {"optimizer", "rng"}) {
    if (!fs::is_directory(dir / sub)) continue;
    for (const auto& e : fs::recursive_directory_iterator(dir / sub))
      if (e.is_regular_file() && !listed.count(fs::relative(e.path(), dir).generic_string()))
        return e.path().string() + ": not part of the checkpoint as written (COMPLETE does not list it)";
  }
  return "";
}

// The optimizer files against each other: layout.json, every writing rank's shard, each
// shard's ranges within its unit and its tensors of the ranges' sizes, every unit covered.
// `values` also reads the moments (finite, exp_avg_sq >= 0): for checkpoints without
// checksums, whose bytes nothing else vouches for.
std::string check_optimizer(const fs::path& dir, int world_size, bool values) {
  const auto opt_dir = dir / "optimizer";
  const auto layout_path = opt_dir / "layout.json";
  if (!fs::exists(layout_path)) return layout_path.string() + ": missing (not an ftrun checkpoint?)";
  std::map<int64_t, int64_t> numel;  // unit -> flat size
  try {
    const auto layout = io::read_json_file(layout_path);
    for (const auto& u : layout.at("units")) numel[json_int64(u.at("unit"))] = json_int64(u.at("numel"));
  } catch (const nlohmann::json::exception& e) {
    return layout_path.string() + ": " + io::json_error_text(e) + " (expected {\"units\": [{\"unit\": N, \"numel\": N, ...}, ...]})";
  } catch (const std::exception& e) {
    return e.what();
  }
  for (int r = 0; r < world_size; ++r)
    if (!fs::exists(opt_dir / rank_file(r)))
      return (opt_dir / rank_file(r)).string() + ": missing (the checkpoint was written by " + std::to_string(world_size) +
             " rank(s))";
  std::map<int64_t, std::vector<std::pair<int64_t, int64_t>>> covered;
  for (const auto& e : fs::directory_iterator(opt_dir)) {
    if (e.path().extension() != ".safetensors") continue;
    const auto file = e.path().string();
    try {
      auto f = st::File::open(file);
      const auto& meta = f->metadata();
      if (!meta.count("ftrun_ranges")) return file + ": no ftrun_ranges metadata";
      const auto ranges = io::parse_json(meta.at("ftrun_ranges"), file + ": ftrun_ranges metadata", io::kSmallJsonLimits);
      for (const auto& kv : ranges.items()) {
        if (kv.key().empty() || kv.key().find_first_not_of("0123456789") != std::string::npos || kv.key().size() > 18)
          return file + ": ftrun_ranges metadata: unit '" + kv.key() + "' is not a unit number";
        const int64_t unit = std::stoll(kv.key());
        const int64_t lo = json_int64(kv.value().at(0)), hi = json_int64(kv.value().at(1));
        auto it = numel.find(unit);
        if (it == numel.end()) return file + ": optimizer state for unit " + kv.key() + ", which layout.json does not have";
        if (lo < 0 || lo > hi || hi > it->second)
          return file + ": range [" + std::to_string(lo) + ", " + std::to_string(hi) + ") of unit " + kv.key() +
                 " is outside the unit's " + std::to_string(it->second) + " elements in layout.json";
        for (const char* which : {"exp_avg", "exp_avg_sq", "master"}) {
          const std::string name = "unit." + kv.key() + "." + which;
          if (std::string(which) == "master" && !f->contains(name)) continue;  // bf16 full fine-tuning only
          const auto& info = f->info(name);
          int64_t n = 1;
          for (auto d : info.shape) n *= d;
          if (info.dtype != "F32" || n != hi - lo)
            return file + ": " + name + " is " + info.dtype + " with " + std::to_string(n) + " elements, its range [" +
                   std::to_string(lo) + ", " + std::to_string(hi) + ") needs F32 with " + std::to_string(hi - lo);
          if (values) {
            const auto t = f->get(name);
            if (!torch::isfinite(t).all().item<bool>()) return file + ": " + name + " holds NaN or infinite values";
            if (std::string(which) == "exp_avg_sq" && (t < 0).any().item<bool>())
              return file + ": " + name + " holds negative values";
          }
        }
        covered[unit].push_back({lo, hi});
      }
    } catch (const nlohmann::json::exception& e) {
      return file + ": ftrun_ranges metadata: " + io::json_error_text(e) + " (expected {\"UNIT\": [lo, hi], ...})";
    } catch (const std::exception& e) {
      return e.what();
    }
  }
  for (const auto& [unit, n] : numel) {
    auto spans = covered[unit];
    std::sort(spans.begin(), spans.end());
    int64_t reached = 0;
    for (const auto& [lo, hi] : spans)
      if (lo <= reached) reached = std::max(reached, hi);
    if (reached < n)
      return opt_dir.string() + ": the optimizer state of unit " + std::to_string(unit) + " covers only [0, " +
             std::to_string(reached) + ") of its " + std::to_string(n) + " elements (a shard is missing or from another run)";
  }
  return "";
}

}  // namespace

std::string checkpoint_damage(const fs::path& dir, std::string* note) {
  int64_t step = -1;
  bool legacy = false;
  auto bad = check_checksums(dir, &step, &legacy);
  if (!bad.empty()) return bad;
  if (legacy && note)
    *note = dir.string() + " was written before checkpoints carried checksums (its COMPLETE holds only the step): "
            "its files are checked for consistency, not byte for byte";
  TrainerState state;
  try {
    state = read_trainer_state(dir);
  } catch (const std::exception& e) {
    return e.what();
  }
  const auto state_path = (dir / kStateFile).string();
  const auto g = std::to_string(state.global_step);
  if (state.global_step != step) return state_path + ": global_step " + g + ", but COMPLETE says " + std::to_string(step);
  const auto clean = dir.lexically_normal();
  const auto name = (clean.has_filename() ? clean : clean.parent_path()).filename().string();
  if (name.rfind("checkpoint-", 0) == 0 && all_digits(name.substr(11)) && std::stoll(name.substr(11)) != state.global_step)
    return state_path + ": global_step " + g + ", but the directory is " + name;
  if (state.global_step < 1 || state.position < 0 || state.world_size < 1)
    return state_path + ": global_step " + g + ", position " + std::to_string(state.position) + ", world_size " +
           std::to_string(state.world_size) + " (expected at least 1, 0, 1)";
  bad = check_optimizer(dir, state.world_size, legacy);
  if (!bad.empty()) return bad;
  for (int r = 0; r < state.world_size; ++r) {
    const auto rng = dir / "rng" / rank_file(r);
    if (!fs::exists(rng))
      return rng.string() + ": missing (the checkpoint was written by " + std::to_string(state.world_size) +
             " rank(s); each one's RNG state is needed to continue exactly)";
    try {
      if (!st::File::open(rng.string())->contains("cpu")) return rng.string() + ": no 'cpu' generator state";
    } catch (const std::exception& e) {
      return e.what();
    }
  }
  return "";
}

std::optional<fs::path> resolve_resume(const std::string& arg, const std::string& output_dir, std::string* message,
                                       std::vector<std::string>* warnings) {
  std::string lower = arg;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower.empty() || lower == "no") return std::nullopt;
  if (lower == "yes") {
    auto found = complete_checkpoints(output_dir);
    if (found.empty()) {
      if (message) *message = "--resume yes: no complete checkpoint in " + output_dir + "; starting fresh";
      return std::nullopt;
    }
    // Newest first; a damaged one is skipped with a warning naming the file and the fault.
    std::vector<std::string> skipped;
    for (auto it = found.rbegin(); it != found.rend(); ++it) {
      const auto dir = fs::path(output_dir) / checkpoint_name(*it);
      std::string note;
      const auto damage = checkpoint_damage(dir, &note);
      if (!damage.empty()) {
        skipped.push_back("--resume yes: skipping damaged " + checkpoint_name(*it) + ": " + damage);
        continue;
      }
      std::string m;
      if (!skipped.empty()) m = "--resume yes: resuming from " + checkpoint_name(*it) + ", the newest intact checkpoint";
      if (!note.empty()) m += (m.empty() ? "" : "; ") + note;
      if (warnings) {
        warnings->insert(warnings->end(), skipped.begin(), skipped.end());
      } else {
        for (auto w = skipped.rbegin(); w != skipped.rend(); ++w) m = *w + (m.empty() ? "" : "; ") + m;
      }
      if (message) *message = m;
      return dir;
    }
    std::string all;
    for (const auto& s : skipped) all += (all.empty() ? "" : "; ") + s.substr(std::string("--resume yes: ").size());
    throw std::runtime_error("--resume yes: no intact checkpoint in " + output_dir + " (" + all +
                             "); remove the damaged checkpoints, or run without --resume to start fresh");
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
  std::string note;
  const auto damage = checkpoint_damage(dir, &note);
  if (!damage.empty())
    throw std::runtime_error("--resume " + arg + ": " + dir.string() + " is damaged: " + damage +
                             " (--resume yes takes the newest intact checkpoint)");
  if (message) *message = note;
  return dir;
}

void check_resume_step(const fs::path& dir, const TrainerState& state, int64_t total_steps) {
  if (state.global_step > total_steps)
    throw std::runtime_error((dir / kStateFile).string() + ": global_step " + std::to_string(state.global_step) +
                             " is beyond this run's " + std::to_string(total_steps) +
                             " steps (max_steps / num_train_epochs): nothing would be trained; raise max_steps, or "
                             "start fresh in another output_dir");
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
  // The stream position counts packed rows with packing and samples without: it cannot carry over.
  if (state.packing != cfg.packing) differ("packing", state.packing, cfg.packing);
  const auto now_args = resume_training_args(cfg.training_args);
  for (const auto& kv : state.training_args.items()) {
    if (!now_args.contains(kv.key())) continue;
    const auto& now = now_args[kv.key()];
    if (now != kv.value()) notes.push_back("training_args." + kv.key() + " changed from " + kv.value().dump() + " to " + now.dump());
  }
  return notes;
}

void load_rank_state(const fs::path& dir, sharding::ZeroEngine& engine, int64_t steps, int rank,
                     const c10::Device& device) {
  auto opt_dir = dir / "optimizer";
  if (!fs::exists(opt_dir / "layout.json"))
    throw std::runtime_error((opt_dir / "layout.json").string() + ": missing (not an ftrun checkpoint?)");
  const nlohmann::json layout = io::read_json_file(opt_dir / "layout.json");
  // The saved parameter layout must be the one this run builds, unit by unit. Keys through
  // at(): a damaged file is an error naming it and the key, never a failed assertion.
  try {
    std::map<int64_t, nlohmann::json> saved;
    for (const auto& u : layout.at("units")) saved[json_int64(u.at("unit"))] = u;
    for (const auto& l : engine.layout()) {
      auto it = saved.find(l.unit);
      if (it == saved.end())
        throw std::runtime_error((opt_dir / "layout.json").string() + ": no optimizer state for unit " + std::to_string(l.unit));
      const auto& params = it->second.at("params");
      if (params.size() != l.params.size())
        throw std::runtime_error((opt_dir / "layout.json").string() + ": unit " + std::to_string(l.unit) + " has " +
                                 std::to_string(params.size()) + " trainable tensors, this run " + std::to_string(l.params.size()));
      for (size_t i = 0; i < l.params.size(); ++i)
        if (params.at(i).at("name") != std::get<0>(l.params[i]) || params.at(i).at("numel") != std::get<2>(l.params[i]))
          throw std::runtime_error((opt_dir / "layout.json").string() + ": trainable tensor " + params.at(i).at("name").get<std::string>() +
                                   " does not match this run's " + std::get<0>(l.params[i]));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error((opt_dir / "layout.json").string() + ": " + io::json_error_text(e));
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
    auto ranges = io::parse_json(meta.at("ftrun_ranges"), e.path().string() + ": ftrun_ranges metadata", io::kSmallJsonLimits);
    try {
      for (const auto& kv : ranges.items())
        s.ranges[std::stoll(kv.key())] = {json_int64(kv.value().at(0)), json_int64(kv.value().at(1))};
    } catch (const std::exception& x) {  // nlohmann's, or stoll's on a key that is no number
      throw std::runtime_error(e.path().string() + ": ftrun_ranges metadata: " + io::json_error_text(x) +
                               " (expected {\"UNIT\": [lo, hi], ...})");
    }
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
  if (!fs::exists(rng_file)) {
    const int writers = read_trainer_state(dir).world_size;
    if (rank < writers)
      throw std::runtime_error(rng_file.string() + ": missing (the checkpoint was written by " + std::to_string(writers) +
                               " rank(s); each one's RNG state is needed to continue exactly)");
    return;  // a rank the writing run did not have (the world grew): its generator keeps the seed's state
  }
  auto f = st::File::open(rng_file.string());
  auto gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(f->get("cpu"));
  // A checkpoint written on the CPU has no "cuda" state: the device's generator then keeps
  // the seed's state (dropout draws differ from an uninterrupted GPU run, nothing else).
  if (device.is_cuda() && f->contains("cuda")) set_cuda_rng_state(device, f->get("cuda"));
}

}  // namespace ftrun::runtime
