// Loading for inference and generation (see generate.h).
#include "runtime/generate.h"

#include <optional>

#include "peft/adapter.h"
#include "runtime/precision.h"
#include "runtime/run_setup.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <limits>
#include <set>
#include <filesystem>
#include <fstream>


namespace fs = std::filesystem;

namespace ftrun::runtime {

Inference load_for_inference(const std::string& path, const std::string& base_override,
                             const std::string& template_override, const BeforeWeights& before_weights,
                             const std::string& torch_dtype, c10::Device device) {
  Inference inf;
  const bool is_adapter = peft::is_adapter_dir(path);
  std::optional<peft::AdapterDir> adapter;
  inf.base_dir = path;
  if (is_adapter) {
    adapter = peft::read_adapter_dir(path);
    inf.base_dir = adapter->base_dir(base_override);
  } else if (!fs::exists(fs::path(path) / "config.json")) {
    throw std::runtime_error(path + ": neither a model directory (config.json) nor an adapter "
                                    "directory (adapter_config.json)");
  }
  // config.json, the tokenizer and the template first (all small): the token ids and the
  // caller's input are checked before the weights are allocated.
  const auto config = models::load_model_config(inf.base_dir);
  const bool own_tok = fs::exists(fs::path(path) / "tokenizer_config.json");
  const std::string tok_dir = own_tok ? path : inf.base_dir;
  inf.tokenizer = data::load_tokenizer(tok_dir);
  inf.chat_template = data::make_template(template_override.empty()
                                              ? data::template_for_model(config.model_type, *inf.tokenizer)
                                              : template_override);
  check_token_ids(config, *inf.tokenizer, tok_dir);
  if (before_weights) before_weights(config, *inf.tokenizer, *inf.chat_template);
  inf.model = models::load_pretrained(inf.base_dir, resolve_weights_dtype(torch_dtype, config, "torch_dtype", nullptr),
                                      device);
  if (is_adapter) {
    inf.strategy = peft::strategy_for_adapter(*adapter);
    inf.strategy->apply(*inf.model);
    if (!device.is_cpu()) inf.model->to(device);  // the adapter's tensors join the base
    inf.strategy->load(path);
  }
  inf.model->eval();
  return inf;
}

void check_generate_options(const GenerateOptions& o) {
  auto bad = [](const std::string& what, double v) {
    std::ostringstream os;
    os << "generate: " << what << " (got " << v << ")";
    throw std::runtime_error(os.str());
  };
  // Written as !(x > 0) so that NaN, which compares false with everything, is refused too.
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    bad("repetition_penalty must be a finite number > 0 (1 = off)", o.repetition_penalty);
  if (!o.do_sample) return;
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    bad("temperature must be a finite number > 0 when sampling", o.temperature);
  if (!(o.top_p > 0 && o.top_p <= 1)) bad("top_p must be in (0, 1]", o.top_p);
  if (o.top_k < 0) bad("top_k must be >= 0 (0 = off)", double(o.top_k));
}

void check_prompt_fits(const models::ModelConfig& config, int64_t prompt_tokens) {
  const int64_t context = config.max_position_embeddings;
  if (context <= 0 || prompt_tokens <= context) return;
  throw std::runtime_error("the prompt is " + std::to_string(prompt_tokens) + " tokens, longer than the model's context of " +
                           std::to_string(context) + " tokens (" + models::config_key(config, "max_position_embeddings") +
                           " in " + config.path + "); generate refuses it rather than cutting it: shorten the prompt");
}

at::Tensor apply_repetition_penalty(const at::Tensor& logits, const std::vector<int64_t>& seen, double penalty) {
  if (penalty == 1.0 || seen.empty()) return logits;
  std::set<int64_t> distinct(seen.begin(), seen.end());
  auto idx = torch::tensor(std::vector<int64_t>(distinct.begin(), distinct.end()), torch::kLong);
  auto picked = logits.index_select(0, idx);
  auto penalised = torch::where(picked < 0, picked * penalty, picked / penalty);
  return logits.index_copy(0, idx, penalised);
}

int64_t choose_next_token(const at::Tensor& logits_in, const std::vector<int64_t>& seq, const GenerateOptions& o,
                          at::Generator& gen) {
  auto logits = apply_repetition_penalty(logits_in.to(at::kFloat), seq, o.repetition_penalty);
  if (!o.do_sample) return logits.argmax().item<int64_t>();
  if (!(o.temperature > 0)) throw std::runtime_error("temperature must be > 0 when sampling");
  logits = logits / o.temperature;
  const float ninf = -std::numeric_limits<float>::infinity();
  auto V = logits.size(0);
  if (o.top_k > 0 && o.top_k < V) {
    // TopKLogitsWarper: everything below the k-th largest logit is removed.
    auto kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, ninf);
  }
  if (o.top_p < 1.0) {
    // TopPLogitsWarper: in ascending order, drop tokens whose cumulative probability (with
    // all smaller ones) is <= 1 - top_p; the most likely token always stays.
    auto sorted = logits.sort(/*dim=*/0, /*descending=*/false);
    auto sorted_logits = std::get<0>(sorted), order = std::get<1>(sorted);
    auto cum = sorted_logits.softmax(0).cumsum(0);
    auto remove_sorted = cum <= (1.0 - o.top_p);
    remove_sorted.index_put_({V - 1}, false);
    auto remove = torch::zeros_like(remove_sorted).scatter(0, order, remove_sorted);
    logits = logits.masked_fill(remove, ninf);
  }
  auto probs = logits.softmax(0);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& o, GenerateStats* stats) {
  if (prompt.empty()) throw std::runtime_error("generate: the prompt is empty");
  check_generate_options(o);
  check_prompt_fits(model.config(), int64_t(prompt.size()));
  torch::NoGradGuard ng;
  model.eval();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto start = std::chrono::steady_clock::now();
  auto since = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  std::vector<int64_t> seq = prompt, out;
  models::KVCache cache;
  at::Tensor logits;  // [vocab] at the last position, on the CPU (where tokens are chosen)
  const auto device = model.device();
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    if (o.use_cache) {
      // The whole prompt once, then one token per step.
      std::vector<int64_t> feed = i == 0 ? seq : std::vector<int64_t>{seq.back()};
      // Only the last position's logits are made (the prompt's others are never used).
      logits = model.forward_cached(torch::tensor(feed, torch::kLong).view({1, -1}).to(device), cache, at::Tensor(),
                                    /*last_only=*/true)[0][-1].to(at::kCPU);
    } else {
      logits = model.forward(torch::tensor(seq, torch::kLong).view({1, -1}).to(device), at::Tensor())[0][-1].to(at::kCPU);
    }
    int64_t next = choose_next_token(logits, seq, o, gen);
    if (i == 0 && stats) stats->first_token_seconds = since();
    seq.push_back(next);
    out.push_back(next);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) break;
    // As generate_batch: no position past the model's table (HF stops at max_length too).
    const int64_t max_pos = model.config().max_position_embeddings;
    if (max_pos > 0 && int64_t(seq.size()) >= max_pos) break;
  }
  if (stats) {
    stats->total_seconds = since();
    stats->new_tokens = int64_t(out.size());
  }
  return out;
}

std::vector<std::vector<int64_t>> generate_batch(models::CausalLM& model,
                                                 const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerateOptions& o,
                                                 const std::function<bool(bool)>& keep_going,
                                                 GenerateStats* stats) {
  const int64_t B = int64_t(prompts.size());
  std::vector<std::vector<int64_t>> outs(prompts.size());
  for (size_t r = 0; r < prompts.size(); ++r)
    if (prompts[r].empty()) throw std::runtime_error("generate_batch: prompt " + std::to_string(r) + " is empty");
  if (!o.use_cache) {
    if (keep_going) throw std::runtime_error("generate_batch: a collective (synced) run needs the KV cache");
    GenerateStats sum;
    for (size_t r = 0; r < prompts.size(); ++r) {
      GenerateOptions row = o;
      row.seed = o.seed + r;
      GenerateStats st;
      outs[r] = generate(model, prompts[r], row, &st);
      sum.total_seconds += st.total_seconds;
      sum.new_tokens += st.new_tokens;
      if (r == 0) sum.first_token_seconds = st.first_token_seconds;
    }
    if (stats) *stats = sum;
    return outs;
  }
  if (o.max_new_tokens <= 0) return outs;
  torch::NoGradGuard ng;
  model.eval();
  auto start = std::chrono::steady_clock::now();
  auto since = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const int64_t max_pos = model.config().max_position_embeddings;
  std::vector<at::Generator> gens;
  for (int64_t r = 0; r < B; ++r) gens.push_back(at::make_generator<at::CPUGeneratorImpl>(o.seed + uint64_t(r)));
  std::vector<std::vector<int64_t>> seqs = prompts;
  std::vector<bool> done(prompts.size(), false);
  const auto device = model.device();  // inputs go there; logits come back for choosing tokens
  auto dummy_forward = [&] {
    models::KVCache scratch;
    model.forward_cached(torch::zeros({1, 1}, torch::kLong).to(device), scratch);
  };
  models::KVCache cache;
  at::Tensor logits;  // [B, vocab] at each row's last position, on the CPU
  if (B > 0) {
    // Left padding: every row's last prompt token sits in the last column.
    size_t longest = 0;
    for (const auto& p : prompts) longest = std::max(longest, p.size());
    auto ids = torch::zeros({B, int64_t(longest)}, torch::kLong);
    auto mask = torch::zeros({B, int64_t(longest)}, torch::kLong);
    bool padded = false;
    for (int64_t r = 0; r < B; ++r) {
      const auto& p = prompts[size_t(r)];
      int64_t off = int64_t(longest - p.size());
      padded = padded || off > 0;
      ids[r].narrow(0, off, int64_t(p.size())).copy_(torch::tensor(p, torch::kLong));
      mask[r].narrow(0, off, int64_t(p.size())).fill_(1);
    }
    logits = model.forward_cached(ids.to(device), cache, padded ? mask.to(device) : at::Tensor(), /*last_only=*/true)
                 .select(1, -1)
                 .to(at::kCPU);
  } else {
    dummy_forward();
  }
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    bool active = false;
    for (int64_t r = 0; r < B; ++r) {
      if (done[size_t(r)]) continue;
      auto& seq = seqs[size_t(r)];
      int64_t next = choose_next_token(logits[r], seq, o, gens[size_t(r)]);
      seq.push_back(next);
      outs[size_t(r)].push_back(next);
      bool stop = std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end() ||
                  int64_t(outs[size_t(r)].size()) >= o.max_new_tokens ||
                  (max_pos > 0 && int64_t(seq.size()) >= max_pos);
      done[size_t(r)] = stop;
      active = active || !stop;
    }
    if (i == 0 && stats) stats->first_token_seconds = since();
    if (i + 1 == o.max_new_tokens) break;  // every row is done (the same step on every rank)
    bool go = keep_going ? keep_going(active) : active;
    if (!go) break;
    if (!active) {
      dummy_forward();
      continue;
    }
    // One new token per row; finished rows get padding (masked, no position).
    auto feed = torch::zeros({B, 1}, torch::kLong);
    auto mask = torch::ones({B, 1}, torch::kLong);
    bool any_done = false;
    for (int64_t r = 0; r < B; ++r) {
      if (done[size_t(r)]) {
        mask[r][0] = 0;
        any_done = true;
      } else {
        feed[r][0] = seqs[size_t(r)].back();
      }
    }
    logits = model.forward_cached(feed.to(device), cache, any_done || cache.real.defined() ? mask.to(device) : at::Tensor())
                 .select(1, -1)
                 .to(at::kCPU);
  }
  if (stats) {
    stats->total_seconds = since();
    stats->new_tokens = 0;
    for (const auto& out : outs) stats->new_tokens += int64_t(out.size());
  }
  return outs;
}

std::vector<int64_t> greedy_generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                                     int64_t max_new_tokens, const std::vector<int64_t>& stop_ids) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.stop_ids = stop_ids;
  return generate(model, prompt, o);
}

}  // namespace ftrun::runtime
