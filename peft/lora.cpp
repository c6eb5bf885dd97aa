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
    "ensure_weight_tying",
    // LoRA+ (an optimizer setting, not a LoraConfig field: kept out of adapter_config.json)
    "loraplus_lr_ratio", "loraplus_lr_embedding"};

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
  if (j.contains("use_dora") && !j["use_dora"].is_null()) {
    if (!j["use_dora"].is_boolean()) bad("use_dora", "expected true or false");
    c.use_dora = j["use_dora"].get<bool>();
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
  for (const char* k : {"modules_to_save", "fan_in_fan_out", "layers_to_transform",
                        "rank_pattern", "alpha_pattern", "lora_bias", "exclude_modules",
                        "layer_replication", "trainable_token_indices", "target_parameters",
                        "use_qalora"})
    if (j.contains(k) && !is_default(j[k])) bad(k, "is not supported by ftrun yet (leave it unset)");
  // LoRA+ is read by the trainer (runtime/config.cpp resolves it); here only checked.
  if (j.contains("loraplus_lr_ratio") && !j["loraplus_lr_ratio"].is_null() &&
      (!j["loraplus_lr_ratio"].is_number() || !(j["loraplus_lr_ratio"].get<double>() > 0)))
    bad("loraplus_lr_ratio", "expected a positive number");
  if (j.contains("loraplus_lr_embedding") && !j["loraplus_lr_embedding"].is_null())
    bad("loraplus_lr_embedding", "is for LoRA on embedding layers, which ftrun does not have (leave it unset)");
  if (j.contains("task_type") && !j["task_type"].is_null() && j["task_type"] != "CAUSAL_LM")
    bad("task_type", "only CAUSAL_LM is supported");
  return c;
}

at::Tensor dora_weight_norm(const at::Tensor& weight, const at::Tensor& lora_weight, double scaling) {
  // torch.linalg.norm(weight, dim=1).to(weight.dtype), as dora.py writes it.
  auto w = weight + scaling * lora_weight;
  return at::linalg_norm(w, c10::nullopt, at::IntArrayRef{1}, false, c10::nullopt).to(w.scalar_type());
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
  std::vector<std::string> resume_keys() const override {
    return {"r", "lora_alpha", "target_modules", "use_rslora", "use_dora"};
  }

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
      if (cfg_.use_dora) {
        modules_.push_back({path, A, B, add_dora(lin, A, B, scale, p)});
        continue;
      }
      // PEFT >= 0.12's order: the input cast to the adapter's dtype (fp32), dropout, B(A(x)) *
      // scale in that dtype; Linear adds it to the base result and casts the sum back once.
      lin->add_delta([A, B, scale, p, owner](const at::Tensor& x) mutable {
        auto h = x.to(A->weight.scalar_type());
        if (p > 0) h = torch::dropout(h, p, owner->is_training());
        return B->forward(A->forward(h)) * scale;
      });
      modules_.push_back({path, A, B, {}});
    }
  }

  // DoRA on one target (PEFT 0.14's LoraLayer.dora_init + DoraLinearLayer; see lora.h).
  // Returns the magnitude vector, registered on the Linear as `lora_magnitude_vector` so that
  // ZeRO finds it in its layer's unit like lora_A/lora_B.
  static at::Tensor add_dora(models::Linear lin, torch::nn::Linear A, torch::nn::Linear B, double scale, double p) {
    at::Tensor init;
    {
      torch::NoGradGuard ng;
      // PEFT moves the new adapter to the base weight's dtype before dora_init and upcasts it
      // to fp32 only afterwards (autocast_adapter_dtype): on a bf16 base the norm is taken,
      // and rounded, in bf16.
      const auto wt = lin->weight.scalar_type();
      // On the base weight's device (a GPU when the model was loaded there; the adapter
      // follows it afterwards).
      const auto dev = lin->weight.device();
      auto lora_weight = torch::matmul(B->weight.to(dev, wt), A->weight.to(dev, wt));
      init = dora_weight_norm(lin->weight, lora_weight, scale).to(at::kFloat);
    }
    auto m = lin->register_parameter("lora_magnitude_vector", init);
    auto* owner = lin.get();
    lin->add_base_delta([A, B, m, scale, p, owner](const at::Tensor& x, const at::Tensor& base) mutable {
      // PEFT 0.14 LoraLayer.forward + DoraLinearLayer.forward: x in the adapter dtype (fp32).
      auto h = x.to(A->weight.scalar_type());
      auto weight = owner->weight.to(h.scalar_type());
      at::Tensor norm;
      {
        // ||W + s BA|| is a constant for autograd (DoRA paper 4.3; PEFT detaches it). PEFT
        // forms BA as B(A(I)).T; B @ A is the same product without an [in, in] identity.
        torch::NoGradGuard ng;
        norm = dora_weight_norm(weight, torch::matmul(B->weight, A->weight).to(weight.scalar_type()), scale);
      }
      auto mag_norm_scale = (m / norm).view({1, -1});
      at::Tensor base_result;
      if (p > 0 && owner->is_training()) {
        // With an active dropout PEFT drops x for the whole DoRA term and recomputes W x'
        // (no bias) in the adapter dtype; the base result keeps the undropped x.
        h = torch::dropout(h, p, true);
        base_result = torch::nn::functional::linear(h, weight);
      } else {
        base_result = owner->bias.defined() ? base - owner->bias : base;
      }
      auto lora_result = B->forward(A->forward(h));
      return (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scale;
    });
    return m;
  }

  NamedTensors trainable() const override {
    NamedTensors out;
    for (const auto& m : modules_) {
      out.emplace_back(kPrefix + m.path + ".lora_A.weight", m.A->weight);
      out.emplace_back(kPrefix + m.path + ".lora_B.weight", m.B->weight);
      if (m.magnitude.defined()) out.emplace_back(kPrefix + m.path + ".lora_magnitude_vector", m.magnitude);
    }
    return out;
  }

  void save(const std::string& dir, const std::string& base_model_path) const override {
    auto j = cfg_.raw;
    // Not LoraConfig fields: PEFT's LoraConfig(**json) would fail on them.
    j.erase("loraplus_lr_ratio");
    j.erase("loraplus_lr_embedding");
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
    j["use_dora"] = cfg_.use_dora;
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
      // PEFT strips the adapter name on save; accept files that kept ".default" (the
      // magnitude vector's in-memory name is lora_magnitude_vector.default.weight).
      std::string alt = kv.first;
      if (alt.size() > 7 && alt.compare(alt.size() - 7, 7, ".weight") == 0)
        alt.replace(alt.rfind(".weight"), 7, ".default.weight");
      else
        alt += ".default.weight";
      std::string name = f->contains(kv.first) ? kv.first : (f->contains(alt) ? alt : "");
      if (name.empty() && kv.first.find(".lora_magnitude_vector") != std::string::npos)
        throw std::runtime_error(file + ": missing DoRA tensor " + kv.first +
                                 " (use_dora is true here; was the adapter trained without DoRA?)");
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
    for (const auto& info : f->tensors()) {
      if (expected.count(info.name)) continue;
      if (!cfg_.use_dora && info.name.find(".lora_magnitude_vector") != std::string::npos)
        throw std::runtime_error(file + ": unexpected tensor " + info.name +
                                 " (a DoRA adapter: this configuration has use_dora false)");
      throw std::runtime_error(file + ": unexpected tensor " + info.name +
                               " (the adapter targets modules this configuration does not)");
    }
  }

 private:
  struct Module {
    std::string path;
    torch::nn::Linear A, B;
    at::Tensor magnitude;  // DoRA's lora_magnitude_vector [out]; undefined for plain LoRA
  };
  LoraConfig cfg_;
  std::vector<Module> modules_;
};

}  // namespace

std::unique_ptr<Strategy> make_lora(const nlohmann::json& peft_config) {
  return std::make_unique<Lora>(parse_lora_config(peft_config));
}

}  // namespace ftrun::peft
