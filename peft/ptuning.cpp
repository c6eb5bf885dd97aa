// The PREFIX_TUNING plug-in (see ptuning.h).
#include "peft/ptuning.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "models/safetensors.h"

namespace fs = std::filesystem;

namespace ftrun::peft {
namespace {

const std::set<std::string> kKnown = {
    "peft_type", "task_type", "num_virtual_tokens", "token_dim", "num_transformer_submodules",
    "num_attention_heads", "num_layers", "encoder_hidden_size", "prefix_projection",
    "inference_mode", "base_model_name_or_path", "revision", "auto_mapping", "modules_to_save",
    "peft_version", "pre_seq_len"};

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw std::runtime_error("peft_config." + key + ": " + what);
}

int64_t positive(const nlohmann::json& j, const char* key, int64_t dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) bad(key, "expected a positive integer");
  return j[key].get<int64_t>();
}

}  // namespace

PrefixConfig parse_prefix_config(const nlohmann::json& j) {
  PrefixConfig c;
  c.raw = j;
  for (const auto& kv : j.items())
    if (!kKnown.count(kv.key()))
      bad(kv.key(), "unknown prefix-tuning option (PrefixTuningConfig keys: num_virtual_tokens, "
                    "token_dim, num_attention_heads, num_layers, prefix_projection, encoder_hidden_size)");
  c.num_virtual_tokens = positive(j, "num_virtual_tokens", positive(j, "pre_seq_len", 0));
  if (c.num_virtual_tokens <= 0) bad("num_virtual_tokens", "required (a positive integer)");
  c.token_dim = positive(j, "token_dim", -1);
  c.num_attention_heads = positive(j, "num_attention_heads", -1);
  c.num_layers = positive(j, "num_layers", -1);
  c.encoder_hidden_size = positive(j, "encoder_hidden_size", -1);
  if (j.contains("prefix_projection") && !j["prefix_projection"].is_null()) {
    if (!j["prefix_projection"].is_boolean()) bad("prefix_projection", "expected true or false");
    c.prefix_projection = j["prefix_projection"].get<bool>();
  }
  if (j.contains("num_transformer_submodules") && j["num_transformer_submodules"] != 1)
    bad("num_transformer_submodules", "only 1 (decoder-only models) is supported");
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() && !j["modules_to_save"].empty())
    bad("modules_to_save", "is not supported by ftrun yet (leave it unset)");
  return c;
}

namespace {

class PrefixEncoderImpl : public torch::nn::Module {
 public:
  PrefixEncoderImpl(int64_t n, int64_t out_dim, int64_t token_dim, bool projection, int64_t hidden)
      : projection_(projection) {
    embedding = register_module("embedding", torch::nn::Embedding(n, projection ? token_dim : out_dim));
    if (projection) {
      down = register_module("transform_0", torch::nn::Linear(token_dim, hidden));
      up = register_module("transform_2", torch::nn::Linear(hidden, out_dim));
    }
  }
  at::Tensor forward() const {
    auto e = embedding->weight;
    if (!projection_) return e;
    namespace F = torch::nn::functional;
    return F::linear(torch::tanh(F::linear(e, down->weight, down->bias)), up->weight, up->bias);
  }
  torch::nn::Embedding embedding{nullptr};
  torch::nn::Linear down{nullptr}, up{nullptr};

 private:
  bool projection_;
};
TORCH_MODULE(PrefixEncoder);

class PrefixTuning : public Strategy {
 public:
  explicit PrefixTuning(PrefixConfig c) : cfg_(std::move(c)) {}
  std::string name() const override { return "PREFIX_TUNING"; }
  std::vector<std::string> resume_keys() const override {
    return {"num_virtual_tokens", "pre_seq_len", "prefix_projection", "encoder_hidden_size", "token_dim"};
  }

  void apply(models::CausalLM& model) override {
    const auto& mc = model.config();
    kv_heads_ = mc.num_key_value_heads;
    head_dim_ = mc.head_dim;
    layers_ = mc.num_hidden_layers;
    auto want_dim = kv_heads_ * head_dim_;
    auto check = [&](const char* key, int64_t& v, int64_t want, const std::string& why) {
      if (v < 0) v = want;
      if (v != want)
        bad(key, std::to_string(v) + " does not fit the model (" + mc.path + "): expected " + std::to_string(want) + " " + why);
    };
    check("token_dim", cfg_.token_dim, want_dim, "= head_dim x key/value heads");
    check("num_attention_heads", cfg_.num_attention_heads, kv_heads_, "= key/value heads");
    check("num_layers", cfg_.num_layers, layers_, "= num_hidden_layers");
    if (cfg_.encoder_hidden_size < 0) cfg_.encoder_hidden_size = cfg_.token_dim;
    for (auto& p : model.parameters()) p.set_requires_grad(false);
    // PEFT initialises the embedding like nn.Embedding (normal(0, 1)) and the MLP like nn.Linear.
    encoder_ = model.register_module("prompt_encoder",
                                     PrefixEncoder(cfg_.num_virtual_tokens, layers_ * 2 * cfg_.token_dim,
                                                   cfg_.token_dim, cfg_.prefix_projection, cfg_.encoder_hidden_size));
    auto enc = encoder_;
    int64_t n = cfg_.num_virtual_tokens, L = layers_, kvh = kv_heads_, hd = head_dim_;
    model.set_prefix_provider([enc, n, L, kvh, hd](int64_t layer, int64_t batch) mutable {
      auto rows = enc->forward().view({n, 2 * L, kvh, hd});
      auto k = rows.select(1, 2 * layer).permute({1, 0, 2}).unsqueeze(0).expand({batch, kvh, n, hd});
      auto v = rows.select(1, 2 * layer + 1).permute({1, 0, 2}).unsqueeze(0).expand({batch, kvh, n, hd});
      return std::make_pair(k, v);
    });
  }

  NamedTensors trainable() const override {
    NamedTensors out;
    for (const auto& p : encoder_->named_parameters()) out.emplace_back("prompt_encoder." + p.key(), p.value());
    return out;
  }

  void save(const std::string& dir, const std::string& base_model_path) const override {
    at::Tensor prompt;
    {
      torch::NoGradGuard ng;
      prompt = encoder_->forward().detach().clone();
    }
    nlohmann::json j = {{"peft_type", "PREFIX_TUNING"},
                        {"task_type", "CAUSAL_LM"},
                        {"num_virtual_tokens", cfg_.num_virtual_tokens},
                        {"token_dim", cfg_.token_dim},
                        {"num_attention_heads", cfg_.num_attention_heads},
                        {"num_layers", cfg_.num_layers},
                        {"num_transformer_submodules", 1},
                        {"encoder_hidden_size", cfg_.encoder_hidden_size},
                        {"prefix_projection", cfg_.prefix_projection},
                        {"inference_mode", true},
                        {"base_model_name_or_path", base_model_path}};
    write_adapter(dir, {{"prompt_embeddings", prompt}}, j);
  }

  void load(const std::string& dir) override {
    auto file = (fs::path(dir) / "adapter_model.safetensors").string();
    auto f = st::File::open(file);
    if (!f->contains("prompt_embeddings"))
      throw std::runtime_error(file + ": no prompt_embeddings tensor (not a prefix-tuning adapter)");
    if (f->tensors().size() != 1)
      throw std::runtime_error(file + ": expected only prompt_embeddings, found " + std::to_string(f->tensors().size()) + " tensors");
    auto t = f->get("prompt_embeddings");
    std::vector<int64_t> want = {cfg_.num_virtual_tokens, layers_ * 2 * cfg_.token_dim};
    if (t.sizes() != at::IntArrayRef(want)) {
      std::ostringstream os;
      os << file << ": prompt_embeddings has shape " << t.sizes() << ", expected " << at::IntArrayRef(want)
         << " (num_virtual_tokens x num_layers*2*token_dim)";
      throw std::runtime_error(os.str());
    }
    if (cfg_.prefix_projection)
      throw std::runtime_error(file + ": a projected prefix is saved as the encoder's output, so it can only be "
                               "loaded with prefix_projection: false (the adapter_config.json of the saved "
                               "adapter says so when read by strategy_from_adapter_dir)");
    torch::NoGradGuard ng;
    encoder_->embedding->weight.copy_(t);
  }

 private:
  PrefixConfig cfg_;
  PrefixEncoder encoder_{nullptr};
  int64_t kv_heads_ = 0, head_dim_ = 0, layers_ = 0;
};

}  // namespace

std::unique_ptr<Strategy> make_prefix_tuning(const nlohmann::json& peft_config) {
  return std::make_unique<PrefixTuning>(parse_prefix_config(peft_config));
}

}  // namespace ftrun::peft
