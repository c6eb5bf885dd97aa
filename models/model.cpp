// Building a model through its family entry (models/family.h), HF-format load/save and the
// causal-LM loss (see model.h).
#include "models/model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "io/file.h"
#include "models/chunked_loss.h"
#include "models/family.h"
#include "models/safetensors.h"

namespace fs = std::filesystem;

namespace ftrun::models {

std::vector<std::pair<std::string, Linear>> CausalLM::linears() {
  std::vector<std::pair<std::string, Linear>> out;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto lin = std::dynamic_pointer_cast<LinearImpl>(item.value()))
      out.emplace_back(item.key(), Linear(lin));
  }
  return out;
}

at::Tensor CausalLM::forward_cached(const at::Tensor&, KVCache&, const at::Tensor&, bool) {
  throw std::runtime_error(config().model_type + ": this model family has no KV-cache decoding path");
}

at::Tensor CausalLM::forward_loss(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                  const at::Tensor& labels, int64_t* count) {
  return causal_lm_loss_sum(forward(input_ids, attention_mask), labels, count);
}

c10::Device CausalLM::device() const {
  for (const auto& p : parameters()) return p.device();
  return c10::Device(c10::kCPU);
}

bool is_packed_mask(const at::Tensor& attention_mask) {
  return attention_mask.defined() && attention_mask.numel() > 0 && attention_mask.max().item<int64_t>() > 1;
}

PackedLayout packed_layout(const at::Tensor& attention_mask, const c10::Device& device) {
  TORCH_CHECK(attention_mask.dim() == 2, "packed attention_mask must be [batch, seq]");
  const auto seg = attention_mask.to(at::kCPU).to(at::kLong).contiguous();
  const int64_t B = seg.size(0), T = seg.size(1);
  auto pos = torch::zeros({B, T}, torch::TensorOptions().dtype(at::kLong));
  const int64_t* s = seg.data_ptr<int64_t>();
  int64_t* p = pos.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t last = 0, start = 0;  // the previous real token's sample index; where its run began
    for (int64_t t = 0; t < T; ++t) {
      const int64_t v = s[b * T + t];
      TORCH_CHECK(v >= 0, "packed attention_mask: negative sample index ", v);
      if (v == 0) continue;
      if (v != last) {
        TORCH_CHECK(v > last, "packed attention_mask: row ", b, " returns to sample ", v, " at position ", t,
                    " (a sample's tokens must be one run, in increasing order)");
        last = v;
        start = t;
      }
      p[b * T + t] = t - start;
    }
  }
  auto segd = seg.to(device);
  auto real = segd != 0;
  auto same = segd.view({B, 1, T, 1}) == segd.view({B, 1, 1, T});
  auto causal = torch::ones({T, T}, torch::TensorOptions().dtype(at::kBool).device(device)).tril().view({1, 1, T, T});
  auto allowed = same.logical_and(causal).logical_and(real.view({B, 1, 1, T})).logical_or(real.logical_not().view({B, 1, T, 1}));
  return {pos.to(device), allowed};
}

CachedStep advance_cache(KVCache& cache, const at::Tensor& attention_mask, int64_t B, int64_t T,
                         const c10::Device& device) {
  const int64_t P = cache.length;
  auto bools = torch::TensorOptions().dtype(at::kBool).device(device);
  auto longs = torch::TensorOptions().dtype(at::kLong).device(device);
  CachedStep s;
  s.past = P;
  if (attention_mask.defined()) {
    TORCH_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == B && attention_mask.size(1) == T,
                "forward_cached: attention_mask must be [batch, new tokens] like input_ids");
    s.query_real = attention_mask.to(device) != 0;
  } else {
    s.query_real = torch::ones({B, T}, bools);
  }
  if (cache.real.defined())
    TORCH_CHECK(cache.real.size(0) == B, "forward_cached: batch of ", B, " rows continues a cache of ",
                cache.real.size(0));
  auto base = cache.next_position.defined() ? cache.next_position : torch::full({B}, P, longs);
  auto counted = base.unsqueeze(1) + s.query_real.to(at::kLong).cumsum(1) - 1;
  s.positions = torch::where(s.query_real, counted, torch::zeros_like(counted));
  auto past_real = cache.real.defined() ? cache.real : torch::ones({B, P}, bools);
  auto key_real = torch::cat({past_real, s.query_real}, 1);                  // [B, P + T]
  auto causal = torch::ones({T, P + T}, bools).tril(P).view({1, 1, T, P + T});  // slot P+i sees j <= P+i
  s.allowed = causal.logical_and(key_real.view({B, 1, 1, P + T}));
  if (attention_mask.defined() || cache.real.defined()) {
    cache.real = key_real;
    cache.next_position = base + s.query_real.to(at::kLong).sum(1);
  }
  cache.length = P + T;
  return s;
}

void CausalLM::record_base_parameters() {
  base_names_.clear();
  for (const auto& p : named_parameters()) base_names_.push_back(p.key());
}

std::shared_ptr<CausalLM> build_model(const ModelConfig& config) {
  // No weights to compare config.json with here: an absurd size gets the memory estimate's
  // error instead of an allocator's.
  check_model_fits_memory(config, 4, "float32");
  std::shared_ptr<CausalLM> m = family_for(config).build(config);
  // HF _init_weights: normal(0, initializer_range) for linear and embedding weights, zero
  // biases; norms stay at one.
  double std_dev = config.raw.value("initializer_range", 0.02);
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters()) {
    const auto& name = p.key();
    if (name.find("norm") != std::string::npos) continue;
    if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.value().zero_();
    else p.value().normal_(0.0, std_dev);
  }
  m->record_base_parameters();
  // What `attn_implementation: auto` means (generation and tools included); a run sets its own.
  m->set_attention_kernel(resolve_attention_kernel("auto"));
  return m;
}

namespace {

bool ignorable(const std::string& name, const ModelConfig& c) {
  // Rotary buffers older checkpoints carry are the family's to name; tied models may still
  // store lm_head.
  const Family* family = buildable_family(c.model_type);
  if (family && family->unused_tensor && family->unused_tensor(name)) return true;
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;
  return false;
}

std::string list_names(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < 10; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > 10) os << ", ... (" << names.size() << " in all)";
  return os.str();
}

using OpenFiles = std::map<std::string, std::shared_ptr<st::File>>;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// config.json against the safetensors headers, before the model is built: a size in
// config.json that the weights contradict would otherwise be allocated first (hidden_size
// 10^9 dies in the allocator with a libtorch trace). The tensors checked are the ones every
// family has, told apart by their HF name's ending (Llama's / ChatGLM's): the embedding and
// output tables [vocab, hidden], the norms [hidden], the MLP's down projection [hidden,
// intermediate], and the number of layers. The remaining shapes are checked by load_weights
// once the (then plausibly sized) model exists; absurd sizes there are caught by the memory
// estimate (check_model_fits_memory).
void check_config_against_weights(const ModelConfig& cfg, const OpenFiles& tensors, const std::string& dir) {
  auto mismatch = [&](const std::string& name, const std::vector<int64_t>& shape, const std::string& field,
                      int64_t value, const std::vector<int64_t>& expected) {
    std::ostringstream os;
    os << tensors.at(name)->path() << ": tensor '" << name << "' has shape " << c10::IntArrayRef(shape)
       << " but config.json's " << config_key(cfg, field) << " " << value << " (" << cfg.path << ") expects "
       << c10::IntArrayRef(expected);
    throw std::runtime_error(os.str());
  };
  const int64_t V = cfg.vocab_size, H = cfg.hidden_size, I = cfg.intermediate_size;
  int64_t layers = 0;
  std::string layer_prefix;
  // The input embedding is checked first: its error is the one to read (lm_head sorts first).
  auto input_table = [](const std::string& n) {
    return ends_with(n, "embed_tokens.weight") || ends_with(n, "word_embeddings.weight");
  };
  std::vector<std::string> order;
  for (const auto& kv : tensors) order.push_back(kv.first);
  std::stable_partition(order.begin(), order.end(), input_table);
  for (const auto& name : order) {
    const auto& shape = tensors.at(name)->info(name).shape;
    const bool table = input_table(name) || name == "lm_head.weight" || ends_with(name, ".output_layer.weight");
    if (table && shape.size() == 2) {
      if (shape[0] != V) mismatch(name, shape, "vocab_size", V, {V, H});
      if (shape[1] != H) mismatch(name, shape, "hidden_size", H, {V, H});
    } else if (ends_with(name, "norm.weight") && shape.size() == 1) {
      if (shape[0] != H) mismatch(name, shape, "hidden_size", H, {H});
    } else if ((ends_with(name, "mlp.down_proj.weight") || ends_with(name, "mlp.dense_4h_to_h.weight")) &&
               shape.size() == 2) {
      if (shape[0] != H) mismatch(name, shape, "hidden_size", H, {H, I});
      if (shape[1] != I) mismatch(name, shape, "intermediate_size", I, {H, I});
    }
    // "....layers.<i>....": the layer count the checkpoint holds.
    const auto at = name.find("layers.");
    if (at != std::string::npos) {
      const auto from = at + 7, to = name.find('.', from);
      const std::string digits = name.substr(from, to == std::string::npos ? std::string::npos : to - from);
      if (!digits.empty() && digits.size() < 10 && digits.find_first_not_of("0123456789") == std::string::npos &&
          std::stoll(digits) + 1 > layers) {
        layers = std::stoll(digits) + 1;
        layer_prefix = name.substr(0, from);
      }
    }
  }
  // More layers in the checkpoint than in config.json is load_weights' "unexpected tensors".
  if (layers > 0 && cfg.num_hidden_layers > layers)
    throw std::runtime_error(cfg.path + ": " + config_key(cfg, "num_hidden_layers") + " is " +
                             std::to_string(cfg.num_hidden_layers) + " but the weights in " + dir + " hold " +
                             std::to_string(layers) + " layers (" + layer_prefix + "0 to " + layer_prefix +
                             std::to_string(layers - 1) + ")");
}

void load_opened_weights(CausalLM& model, const std::string& dir, const OpenFiles& tensors) {
  const auto& cfg = model.config();
  auto params = model.named_parameters();
  std::set<std::string> base(model.base_parameter_names().begin(), model.base_parameter_names().end());
  std::vector<std::string> missing, unexpected;
  for (const auto& kv : tensors)
    if (!params.contains(kv.first) && !ignorable(kv.first, cfg)) unexpected.push_back(kv.first);
  for (const auto& name : base)
    if (!tensors.count(name)) missing.push_back(name);
  if (!missing.empty() || !unexpected.empty()) {
    std::string msg = dir + ": checkpoint does not match the " + cfg.model_type + " model of " + cfg.path;
    if (!missing.empty()) msg += "; missing tensors: " + list_names(missing);
    if (!unexpected.empty()) msg += "; unexpected tensors: " + list_names(unexpected);
    throw std::runtime_error(msg);
  }
  torch::NoGradGuard ng;
  for (const auto& name : base) {
    auto& dst = params[name];
    const auto& file = *tensors.at(name);
    const auto& shape = file.info(name).shape;
    if (c10::IntArrayRef(shape) != dst.sizes()) {
      std::ostringstream os;
      os << dir << ": tensor '" << name << "' has shape " << c10::IntArrayRef(shape) << " but the model ("
         << cfg.path << ") expects " << dst.sizes();
      throw std::runtime_error(os.str());
    }
    file.read_into(name, dst, /*require_finite=*/true);
  }
}

}  // namespace

void load_weights(CausalLM& model, const std::string& dir) {
  // Names and shapes come from the headers; each tensor's data is read (and cast) straight
  // into its parameter, one at a time: no second copy of the weights is ever held. NaN or
  // inf in a weight is an error naming the file and the tensor (checked chunk by chunk).
  load_opened_weights(model, dir, st::open_all(dir));
}

namespace {

// Advances the CPU generator's Mersenne Twister by `draws` 32-bit outputs without computing
// them: whole 624-word blocks are regenerated (the engine's own next_state), the rest is
// index arithmetic. Equal to calling the engine `draws` times (tests/models/load_test.cpp).
void advance_engine(at::mt19937& engine, uint64_t draws) {
  constexpr int N = 624, M = 397;
  constexpr uint32_t kMatrixA = 0x9908b0df, kUpper = 0x80000000, kLower = 0x7fffffff;
  auto data = engine.data();
  auto twist = [&](uint32_t u, uint32_t v) { return (((u & kUpper) | (v & kLower)) >> 1) ^ (v & 1 ? kMatrixA : 0); };
  auto next_state = [&] {
    uint32_t* p = data.state_.data();
    for (int j = 0; j < N - M; ++j, ++p) p[0] = p[M] ^ twist(p[0], p[1]);
    for (int j = 0; j < M - 1; ++j, ++p) p[0] = p[M - N] ^ twist(p[0], p[1]);
    p[0] = p[M - N] ^ twist(p[0], data.state_[0]);
  };
  while (draws > 0) {
    // A draw first decrements left_; the one that brings it to 0 regenerates the block.
    const uint64_t before_twist = uint64_t(data.left_ - 1);
    if (draws <= before_twist) {
      data.left_ -= int(draws);
      data.next_ += uint32_t(draws);
      break;
    }
    draws -= before_twist + 1;
    next_state();
    data.left_ = N;
    data.next_ = 1;
  }
  engine.set_data(data);
}

}  // namespace

void advance_cpu_rng(uint64_t draws) {
  if (draws == 0) return;
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto* impl = gen.get<at::CPUGeneratorImpl>();
  auto engine = impl->engine();
  advance_engine(engine, draws);
  impl->set_engine(engine);
}

std::shared_ptr<CausalLM> load_pretrained(const std::string& dir, at::ScalarType dtype, c10::Device device) {
  auto cfg = load_model_config(dir);
  // Nothing is allocated before config.json has been checked against the weights' headers
  // (no tensor data is read for that) and the model is known to fit this machine.
  auto tensors = st::open_all(dir);
  check_config_against_weights(cfg, tensors, dir);
  if (device.is_cpu()) check_model_fits_memory(cfg, int(c10::elementSize(dtype)), hf_dtype_name(dtype));
  // HF's low_cpu_mem_usage: the model is made in `dtype` without init and each checkpoint
  // tensor is read into its parameter (load_weights), so a bf16 checkpoint loads into bf16
  // without ever existing in fp32, and an fp32 one is cast a tensor at a time. The values
  // are those of build + load + to(dtype) (copy_ rounds as to() does).
  std::shared_ptr<CausalLM> m;
  uint64_t draws = 0;
  {
    EmptyInitScope scope(dtype, device);
    m = family_for(cfg).build(cfg);
    draws = scope.skipped_draws();
  }
  m->record_base_parameters();
  // The generator ends where build_model's init would have left it, so what a seeded run
  // draws next (LoRA's A, the prefix encoder) is what it always was. Every init is normal_
  // on a contiguous fp32 tensor (build_model's loop, below; the Embedding's own, counted by
  // the scope); biases and norms draw nothing.
  for (const auto& p : m->named_parameters()) {
    const auto& name = p.key();
    if (name.find("norm") != std::string::npos) continue;
    if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) continue;
    const int64_t n = p.value().numel();
    if (n >= 16) {
      draws += normal_fill_draws(n);
    } else {
      // libtorch's serial path (Box-Muller in double, caching a sample): run it as is, in order.
      advance_cpu_rng(draws);
      draws = 0;
      torch::NoGradGuard ng;
      torch::empty({n}).normal_();
    }
  }
  advance_cpu_rng(draws);
  load_opened_weights(*m, dir, tensors);
  return m;
}

std::string hf_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    default: return "float32";
  }
}

void save_pretrained(CausalLM& model, const std::string& dir, uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  auto params = model.named_parameters();
  st::NamedTensors tensors;
  for (const auto& name : model.base_parameter_names())
    tensors.emplace_back(name, params[name].detach());
  st::save_model(dir, tensors, max_shard_bytes);
  io::write_json_atomic(fs::path(dir) / "config.json",
                        config_for_save(model, tensors.empty() ? at::kFloat : tensors.front().second.scalar_type()));
}

nlohmann::json config_for_save(const CausalLM& model, at::ScalarType written) {
  // As HF's save_pretrained: config.json's torch_dtype says what the weights were written in.
  auto raw = model.config().raw;
  if (raw.contains("torch_dtype") || written != at::kFloat) raw["torch_dtype"] = hf_dtype_name(written);
  return raw;
}

at::Tensor causal_lm_loss_sum(const at::Tensor& logits, const at::Tensor& labels, int64_t* count) {
  auto T = logits.size(1);
  auto shift_logits = logits.narrow(1, 0, T - 1).reshape({-1, logits.size(2)});
  auto shift_labels = labels.narrow(1, 1, T - 1).reshape({-1});
  if (count) *count = (shift_labels != -100).sum().item<int64_t>();
  return torch::nn::functional::cross_entropy(
      shift_logits, shift_labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

LabelRows select_label_rows(const at::Tensor& hidden, const at::Tensor& labels) {
  TORCH_CHECK(hidden.dim() == 3 && labels.dim() == 2 && labels.size(0) == hidden.size(0) &&
                  labels.size(1) == hidden.size(1),
              "select_label_rows: hidden [B, T, H] and labels [B, T] expected, got ", hidden.sizes(), " and ",
              labels.sizes());
  const int64_t T = hidden.size(1), H = hidden.size(2);
  auto lab = labels.to(hidden.device(), at::kLong);
  LabelRows r;
  // (b, t) with labels[b, t + 1] != -100, in row-major order: the order cross_entropy sums in.
  auto at_bt = lab.narrow(1, 1, std::max<int64_t>(T - 1, 0)).ne(-100).nonzero();
  auto flat = at_bt.select(1, 0) * T + at_bt.select(1, 1);
  r.count = flat.size(0);
  r.targets = lab.reshape({-1}).index_select(0, flat + 1);
  r.hidden = hidden.reshape({-1, H}).index_select(0, flat);
  return r;
}

at::Tensor lm_head_loss_sum(const at::Tensor& y, Linear head, const at::Tensor& tied_weight, const at::Tensor& targets,
                            int64_t chunk_tokens) {
  if (head && (head->has_deltas() || head->bias.defined())) {
    auto logits = head(y).to(at::kFloat);
    return torch::nn::functional::cross_entropy(
        logits, targets,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  }
  return chunked_linear_cross_entropy(y, head ? head->weight : tied_weight, targets, chunk_tokens);
}

}  // namespace ftrun::models
