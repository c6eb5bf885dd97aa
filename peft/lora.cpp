// The LoRA plug-in (see lora.h).
#include "peft/lora.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <set>

#include "models/safetensors.h"

namespace fs = std::filesystem;

namespace ftrun::peft {
namespace {

constexpr const char* kPrefix = "base_model.model.";

// Every LoraConfig field PEFT may write (0.13-0.15), so adapter_config.json files it
// produced are read without complaint.
const std::set<std::string> kKnownKeys = {
    "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules",
    "base_model_name_or_path", "bias", "use_rslora", "use_dora", "modules_to_save",
    "fan_in_fan_out", "inference_mode", "init_lora_weights", "layers_to_transform",
    "layers_pattern", "rank_pattern", "alpha_pattern", "megatron_config", "megatron_core",
    "loftq_config", "layer_replication", "runtime_config", "lora_bias", "exclude_modules",
    "eva_config", "corda_config", "trainable_token_indices", "auto_mapping", "revision",
    "peft_version", "target_parameters", "use_qalora", "qalora_group_size",
    "ensure_weight_tying"};

bool is_default(const nlohmann::json& v) {
  if (v.is_null()) return true;
  if (v.is_boolean()) return !v.get<bool>();
  if (v.is_object() || v.is_array()) return v.empty();
  return false;
}

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw std::runtime_error("peft_config." + key + ": " + what);
}

}  // namespace

LoraConfig parse_lora_config(const nlohmann::json& j) {
  LoraConfig c;
  c.raw = j;
  for (const auto& kv : j.items()) {
    if (!kKnownKeys.count(kv.key())) {
      std::string known;
      for (const auto& k : {"r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora"})
        known += std::string(known.empty() ? "" : ", ") + k;
      bad(kv.key(), "unknown LoRA option (LoraConfig keys include " + known + ")");
    }
  }
  if (j.contains("r")) {
    if (!j["r"].is_number_integer() || j["r"].get<int64_t>() <= 0) bad("r", "expected a positive integer");
    c.r = j["r"].get<int64_t>();
  }
  if (j.contains("lora_alpha")) {
    if (!j["lora_alpha"].is_number()) bad("lora_alpha", "expected a number");
    c.lora_alpha = j["lora_alpha"].get<double>();
  }
  if (j.contains("lora_dropout")) {
    if (!j["lora_dropout"].is_number()) bad("lora_dropout", "expected a number in [0, 1)");
    c.lora_dropout = j["lora_dropout"].get<double>();
    if (c.lora_dropout < 0 || c.lora_dropout >= 1) bad("lora_dropout", "expected a number in [0, 1)");
  }
  if (j.contains("use_rslora")) {
    if (!j["use_rslora"].is_boolean()) bad("use_rslora", "expected true or false");
    c.use_rslora = j["use_rslora"].get<bool>();
  }
  if (j.contains("target_modules") && !j["target_modules"].is_null()) {
    const auto& t = j["target_modules"];
    if (t.is_string()) {
      c.target_regex = t.get<std::string>();
      try {
        std::regex re(c.target_regex);
      } catch (const std::regex_error& e) {
        bad("target_modules", "invalid regular expression '" + c.target_regex + "': " + e.what());
      }
    } else if (t.is_array()) {
      for (const auto& v : t) {
        if (!v.is_string()) bad("target_modules", "expected a list of module names or a regex string");
        c.target_modules.push_back(v.get<std::string>());
      }
      if (c.target_modules.empty()) bad("target_modules", "the list is empty");
    } else {
      bad("target_modules", "expected a list of module names or a regex string");
    }
  }
  if (j.contains("bias") && j["bias"] != "none") bad("bias", "only \"none\" is supported");
  if (j.contains("init_lora_weights") && j["init_lora_weights"] != true)
    bad("init_lora_weights", "only true (kaiming-uniform A, zero B) is supported");
  for (const char* k : {"use_dora", "modules_to_save", "fan_in_fan_out", "layers_to_transform",
                        "rank_pattern", "alpha_pattern", "lora_bias", "exclude_modules",
                        "layer_replication", "trainable_token_indices", "target_parameters",
                        "use_qalora"})
    if (j.contains(k) && !is_default(j[k])) bad(k, "is not supported by ftrun yet (leave it unset)");
  if (j.contains("task_type") && !j["task_type"].is_null() && j["task_type"] != "CAUSAL_LM")
    bad("task_type", "only CAUSAL_LM is supported");
  return c;
}

std::vector<std::string> lora_targets(const LoraConfig& cfg, models::CausalLM& model) {
  auto targets = cfg.target_modules;
  if (targets.empty() && cfg.target_regex.empty()) targets = {"q_proj", "v_proj"};  // PEFT's llama default
  std::optional<std::regex> re;
  if (!cfg.target_regex.empty()) re.emplace(cfg.target_regex);
  std::vector<std::string> out;
  for (const auto& kv : model.linears()) {
    const auto& name = kv.first;
    bool hit = false;
    if (re) {
      hit = std::regex_match(name, *re);
    } else {
      for (const auto& t : targets)
        if (name == t || (name.size() > t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0 &&
                          name[name.size() - t.size() - 1] == '.'))
          hit = true;
    }
    if (hit) out.push_back(name);
  }
  if (out.empty()) {
    std::string want = re ? cfg.target_regex : nlohmann::json(targets).dump();
    throw std::runtime_error("peft_config.target_modules: " + want +
                             " matches no linear layer of the model (e.g. " +
                             (model.linears().empty() ? std::string("none") : model.linears().front().first) + ")");
  }
  return out;
}

namespace {

class Lora : public Strategy {
 public:
  explicit Lora(LoraConfig cfg) : cfg_(std::move(cfg)) {}
  std::string name() const override { return "LORA"; }
  std::vector<std::string> resume_keys() const override { return {"r", "lora_alpha", "target_modules", "use_rslora"}; }

  void apply(models::CausalLM& model) override {
    for (auto& p : model.parameters()) p.set_requires_grad(false);
    double scale = cfg_.use_rslora ? cfg_.lora_alpha / std::sqrt(double(cfg_.r))
                                   : cfg_.lora_alpha / double(cfg_.r);
    auto all = model.linears();
    std::map<std::string, models::Linear> by_name(all.begin(), all.end());
    for (const auto& path : lora_targets(cfg_, model)) {
      auto lin = by_name.at(path);
      torch::nn::Linear A(lin->register_module("lora_A", torch::nn::Linear(torch::nn::LinearOptions(lin->in_features, cfg_.r).bias(false))));
      torch::nn::Linear B(lin->register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(cfg_.r, lin->out_features).bias(false))));
      {
        torch::NoGradGuard ng;
        torch::nn::init::kaiming_uniform_(A->weight, std::sqrt(5.0));
        B->weight.zero_();
      }
      double p = cfg_.lora_dropout;
      auto* owner = lin.get();
      // PEFT >= 0.12's order: the input cast to the adapter's dtype (fp32), dropout, B(A(x)) *
      // scale in that dtype; Linear adds it to the base result and casts the sum back once.
      lin->add_delta([A, B, scale, p, owner](const at::Tensor& x) mutable {
        auto h = x.to(A->weight.scalar_type());
        if (p > 0) h = torch::dropout(h, p, owner->is_training());
        return B->forward(A->forward(h)) * scale;
      });
      modules_.push_back({path, A, B});
    }
  }

  NamedTensors trainable() const override {
    NamedTensors out;
    for (const auto& m : modules_) {
      out.emplace_back(kPrefix + m.path + ".lora_A.weight", m.A->weight);
      out.emplace_back(kPrefix + m.path + ".lora_B.weight", m.B->weight);
    }
    return out;
  }

  void save(const std::string& dir, const std::string& base_model_path) const override {
    auto j = cfg_.raw;
    j["peft_type"] = "LORA";
    j["task_type"] = "CAUSAL_LM";
    j["r"] = cfg_.r;
    j["lora_alpha"] = cfg_.lora_alpha;
    j["lora_dropout"] = cfg_.lora_dropout;
    std::vector<std::string> saved_targets;
    for (const auto& m : modules_) {
      auto last = m.path.substr(m.path.rfind('.') + 1);
      if (std::find(saved_targets.begin(), saved_targets.end(), last) == saved_targets.end())
        saved_targets.push_back(last);
    }
    if (cfg_.target_regex.empty()) j["target_modules"] = saved_targets;
    j["base_model_name_or_path"] = base_model_path;
    j["bias"] = "none";
    j["use_rslora"] = cfg_.use_rslora;
    j["use_dora"] = false;
    j["modules_to_save"] = nullptr;
    j["fan_in_fan_out"] = false;
    j["inference_mode"] = true;
    j["init_lora_weights"] = true;
    write_adapter(dir, trainable(), j);
  }

  void load(const std::string& dir) override {
    auto file = (fs::path(dir) / "adapter_model.safetensors").string();
    auto f = st::File::open(file);
    std::set<std::string> expected;
    torch::NoGradGuard ng;
    for (const auto& kv : trainable()) {
      expected.insert(kv.first);
      // PEFT strips the adapter name on save; accept files that kept ".default".
      std::string alt = kv.first;
      alt.replace(alt.rfind(".weight"), 7, ".default.weight");
      std::string name = f->contains(kv.first) ? kv.first : (f->contains(alt) ? alt : "");
      if (name.empty())
        throw std::runtime_error(file + ": missing LoRA tensor " + kv.first +
                                 " (was the adapter trained with other target_modules?)");
      auto t = f->get(name);
      if (t.sizes() != kv.second.sizes()) {
        std::ostringstream os;
        os << file << ": tensor " << name << " has shape " << t.sizes() << ", expected "
           << kv.second.sizes() << " (r=" << cfg_.r << ")";
        throw std::runtime_error(os.str());
      }
      kv.second.copy_(t);
      expected.insert(name);
    }
    for (const auto& info : f->tensors())
      if (!expected.count(info.name))
        throw std::runtime_error(file + ": unexpected tensor " + info.name +
                                 " (the adapter targets modules this configuration does not)");
  }

 private:
  struct Module {
    std::string path;
    torch::nn::Linear A, B;
  };
  LoraConfig cfg_;
  std::vector<Module> modules_;
};

}  // namespace

std::unique_ptr<Strategy> make_lora(const nlohmann::json& peft_config) {
  return std::make_unique<Lora>(parse_lora_config(peft_config));
}

}  // namespace ftrun::peft
