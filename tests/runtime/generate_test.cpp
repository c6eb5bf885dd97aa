// Generation: the KV-cache path against recomputing the whole sequence (logits to 1e-5,
// same greedy tokens) for the Llama, Qwen2 and ChatGLM families, plain, with LoRA and with a
// prefix adapter; the sampling processors (top-k=1 is greedy, top-p, seeds) and HF's
// repetition penalty on hand-made logits. Batched generation (left padding + mask + one KV
// cache): every row equals generate() on that row alone, for Llama, Qwen2, GLM-4 and ChatGLM3,
// plain and with adapters, rows stopping at different steps; the collective (synced) loop
// makes the same number of forward calls however much work a process has.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <set>

#include "models/model.h"
#include "peft/strategy.h"
#include "runtime/generate.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

struct Setup {
  std::shared_ptr<models::CausalLM> model;
  std::unique_ptr<peft::Strategy> strategy;  // kept alive: it owns the adapter hooks
};

Setup tiny(const std::string& type, const std::string& adapter) {
  Setup out;
  // Larger weights than HF's init (weight_std) so that logits differ clearly between tokens,
  // and non-zero biases (Qwen2 / GLM qkv) so they take part.
  out.model = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(50, {32, 48, 4, 2}, type), 5, /*weight_std=*/0.2});
  torch::NoGradGuard ng;
  nlohmann::json cfg;
  if (adapter == "lora") {
    bool glm = type == "glm4" || type == "chatglm3";
    cfg = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
           {"target_modules", glm ? nlohmann::json{"query_key_value", "dense_4h_to_h"}
                                  : nlohmann::json{"q_proj", "k_proj", "v_proj", "down_proj"}}};
  } else if (adapter == "prefix") {
    cfg = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}};
  }
  if (!cfg.is_null()) {
    out.strategy = peft::make_strategy(cfg);
    out.strategy->apply(*out.model);
    for (auto& kv : out.strategy->trainable()) kv.second.normal_(0, 0.3);
  }
  out.model->eval();
  return out;
}

void check_cache_matches_recompute(const std::string& type, const std::string& adapter) {
  SCOPED_TRACE(type + " / " + (adapter.empty() ? "plain" : adapter));
  auto setup = tiny(type, adapter);
  auto& m = *setup.model;
  torch::NoGradGuard ng;
  std::vector<int64_t> seq = {1, 7, 3, 22, 9};
  models::KVCache cache;
  // The prompt in one call: every row equals the full forward.
  auto ids = torch::tensor(seq, torch::kLong).view({1, -1});
  auto cached = m.forward_cached(ids, cache);
  auto full = m.forward(ids, at::Tensor());
  EXPECT_LE((cached - full).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(cache.length, 5);
  // Then one token at a time (greedy), each step against the whole sequence recomputed.
  for (int step = 0; step < 8; ++step) {
    int64_t next = cached[0][-1].argmax().item<int64_t>();
    seq.push_back(next);
    cached = m.forward_cached(torch::tensor({next}, torch::kLong).view({1, 1}), cache);
    full = m.forward(torch::tensor(seq, torch::kLong).view({1, -1}), at::Tensor());
    ASSERT_LE((cached[0][-1] - full[0][-1]).abs().max().item<double>(), 1e-5) << "step " << step;
  }
  // A multi-token chunk continuing a cache (positions continue from cache.length).
  std::vector<int64_t> chunk = {4, 11, 2};
  auto c = m.forward_cached(torch::tensor(chunk, torch::kLong).view({1, -1}), cache);
  seq.insert(seq.end(), chunk.begin(), chunk.end());
  full = m.forward(torch::tensor(seq, torch::kLong).view({1, -1}), at::Tensor());
  EXPECT_LE((c[0] - full[0].narrow(0, full.size(1) - 3, 3)).abs().max().item<double>(), 1e-5);

  // generate(): same tokens with and without the cache.
  runtime::GenerateOptions o;
  o.max_new_tokens = 12;
  auto with = runtime::generate(m, {1, 7, 3, 22, 9}, o);
  o.use_cache = false;
  auto without = runtime::generate(m, {1, 7, 3, 22, 9}, o);
  EXPECT_EQ(with, without);
  EXPECT_EQ(with.size(), 12u);
}

}  // namespace

TEST(KVCache, Llama) {
  for (const char* a : {"", "lora", "prefix"}) check_cache_matches_recompute("llama", a);
}
TEST(KVCache, Qwen2) {
  for (const char* a : {"", "lora", "prefix"}) check_cache_matches_recompute("qwen2", a);
}
TEST(KVCache, Glm4) {
  for (const char* a : {"", "lora", "prefix"}) check_cache_matches_recompute("glm4", a);
}
TEST(KVCache, ChatGLM3) {
  for (const char* a : {"", "lora", "prefix"}) check_cache_matches_recompute("chatglm3", a);
}

TEST(Generate, StopsAfterAStopId) {
  auto setup = tiny("llama", "");
  runtime::GenerateOptions o;
  o.max_new_tokens = 10;
  auto free_run = runtime::generate(*setup.model, {1, 2, 3}, o);
  ASSERT_GE(free_run.size(), 3u);
  o.stop_ids = {free_run[2]};
  auto stopped = runtime::generate(*setup.model, {1, 2, 3}, o);
  auto first = std::find(free_run.begin(), free_run.end(), free_run[2]) - free_run.begin();
  EXPECT_EQ(stopped, std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));
}

TEST(Generate, TopKOneSamplingEqualsGreedy) {
  for (const char* type : {"llama", "glm4"}) {
    auto setup = tiny(type, "");
    runtime::GenerateOptions o;
    o.max_new_tokens = 10;
    auto greedy = runtime::generate(*setup.model, {3, 1, 4, 1, 5}, o);
    o.do_sample = true;
    o.top_k = 1;
    o.temperature = 0.7;
    for (uint64_t seed : {0, 1, 2}) {
      o.seed = seed;
      EXPECT_EQ(runtime::generate(*setup.model, {3, 1, 4, 1, 5}, o), greedy) << type << " seed " << seed;
    }
  }
}

TEST(Generate, SamplingIsReproducibleBySeed) {
  auto setup = tiny("llama", "");
  runtime::GenerateOptions o;
  o.max_new_tokens = 16;
  o.do_sample = true;
  o.temperature = 2.0;
  o.seed = 11;
  auto a = runtime::generate(*setup.model, {3, 1, 4}, o);
  auto b = runtime::generate(*setup.model, {3, 1, 4}, o);
  EXPECT_EQ(a, b);
  bool differs = false;
  for (uint64_t seed = 12; seed < 20 && !differs; ++seed) {
    o.seed = seed;
    differs = runtime::generate(*setup.model, {3, 1, 4}, o) != a;
  }
  EXPECT_TRUE(differs) << "different seeds should give different samples at temperature 2";
}

TEST(Generate, RepetitionPenaltyIsHfFormula) {
  // HF: for tokens in the sequence, logit > 0 -> logit / p, logit < 0 -> logit * p; each
  // token once however often it occurred; others unchanged.
  auto logits = torch::tensor({2.0f, -1.0f, 0.5f, 3.0f, -0.25f});
  auto out = runtime::apply_repetition_penalty(logits, {0, 1, 1, 4, 0}, 2.0);
  auto expected = torch::tensor({1.0f, -2.0f, 0.5f, 3.0f, -0.5f});
  EXPECT_TRUE(torch::allclose(out, expected)) << out;
  EXPECT_TRUE(torch::equal(logits, torch::tensor({2.0f, -1.0f, 0.5f, 3.0f, -0.25f}))) << "input modified";
  // The penalty changes the greedy choice: 2.0 / 2 = 1.0 < 1.5.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  runtime::GenerateOptions o;
  auto l2 = torch::tensor({2.0f, 1.5f, -1.0f});
  EXPECT_EQ(runtime::choose_next_token(l2, {2}, o, gen), 0);
  o.repetition_penalty = 2.0;
  EXPECT_EQ(runtime::choose_next_token(l2, {0}, o, gen), 1);
  // A penalty below 1 favours repeats: -1 * 0.25 = -0.25 > -0.5.
  o.repetition_penalty = 0.25;
  EXPECT_EQ(runtime::choose_next_token(torch::tensor({-0.5f, -1.0f}), {1}, o, gen), 1);
}

TEST(Generate, TopPKeepsTheNucleusOnly) {
  // probs 0.5, 0.3, 0.2: with top_p 0.6 HF keeps {0, 1} (ascending cumsum 0.2 <= 0.4 is cut).
  auto logits = torch::tensor({0.5f, 0.3f, 0.2f}).log();
  runtime::GenerateOptions o;
  o.do_sample = true;
  o.top_p = 0.6;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  std::set<int64_t> seen;
  for (int i = 0; i < 300; ++i) seen.insert(runtime::choose_next_token(logits, {}, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
  // top_k 2 keeps the same two; top_p 0.4 only the most likely.
  o.top_p = 0.4;
  seen.clear();
  for (int i = 0; i < 100; ++i) seen.insert(runtime::choose_next_token(logits, {}, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{0}));
  o.top_p = 1.0;
  o.top_k = 2;
  seen.clear();
  for (int i = 0; i < 300; ++i) seen.insert(runtime::choose_next_token(logits, {}, o, gen));
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
}

namespace {

void check_batch_matches_single(const std::string& type, const std::string& adapter) {
  SCOPED_TRACE(type + " / " + (adapter.empty() ? "plain" : adapter));
  auto setup = tiny(type, adapter);
  auto& m = *setup.model;
  torch::NoGradGuard ng;
  const std::vector<std::vector<int64_t>> prompts = {{1, 7, 3, 22, 9}, {4}, {2, 8, 15}, {30, 31, 5, 6, 7, 8, 9, 10}};
  // Left-padded prefill: each row's logits equal the unpadded row's.
  {
    models::KVCache cache;
    auto ids = torch::zeros({4, 8}, torch::kLong);
    auto mask = torch::zeros({4, 8}, torch::kLong);
    for (int64_t r = 0; r < 4; ++r) {
      auto n = int64_t(prompts[size_t(r)].size());
      ids[r].narrow(0, 8 - n, n).copy_(torch::tensor(prompts[size_t(r)], torch::kLong));
      mask[r].narrow(0, 8 - n, n).fill_(1);
    }
    auto batched = m.forward_cached(ids, cache, mask);
    for (int64_t r = 0; r < 4; ++r) {
      auto n = int64_t(prompts[size_t(r)].size());
      auto alone = m.forward(torch::tensor(prompts[size_t(r)], torch::kLong).view({1, -1}), at::Tensor())[0];
      EXPECT_LE((batched[r].narrow(0, 8 - n, n) - alone).abs().max().item<double>(), 1e-5) << "row " << r;
    }
    // One more token per row (row 2 padded this step): still each row's own continuation.
    auto feed = torch::tensor({11, 12, 0, 13}, torch::kLong).view({4, 1});
    auto step_mask = torch::tensor({1, 1, 0, 1}, torch::kLong).view({4, 1});
    auto next = m.forward_cached(feed, cache, step_mask);
    for (int64_t r : {0, 1, 3}) {
      auto seq = prompts[size_t(r)];
      seq.push_back(feed[r][0].item<int64_t>());
      auto alone = m.forward(torch::tensor(seq, torch::kLong).view({1, -1}), at::Tensor())[0][-1];
      EXPECT_LE((next[r][0] - alone).abs().max().item<double>(), 1e-5) << "row " << r << " after a step";
    }
  }
  // Greedy: batched rows equal generate() on each row alone, each stopping on its own.
  runtime::GenerateOptions o;
  o.max_new_tokens = 12;
  auto free_run = runtime::generate(m, prompts[1], o);
  o.stop_ids = {free_run[3]};  // row 1 stops within 4 tokens; the others whenever they meet it
  std::vector<std::vector<int64_t>> singles;
  std::set<size_t> lengths;
  for (const auto& p : prompts) {
    singles.push_back(runtime::generate(m, p, o));
    lengths.insert(singles.back().size());
  }
  EXPECT_GE(lengths.size(), 2u) << "rows should stop at different steps";
  runtime::GenerateStats stats;
  auto batch = runtime::generate_batch(m, prompts, o, nullptr, &stats);
  ASSERT_EQ(batch.size(), prompts.size());
  int64_t total = 0;
  for (size_t r = 0; r < prompts.size(); ++r) {
    EXPECT_EQ(batch[r], singles[r]) << "row " << r;
    total += int64_t(singles[r].size());
  }
  EXPECT_EQ(stats.new_tokens, total);
  // Sampling: row 0 draws like generate() with the same seed.
  o.do_sample = true;
  o.temperature = 1.5;
  o.seed = 3;
  auto sampled = runtime::generate_batch(m, prompts, o);
  EXPECT_EQ(sampled[0], runtime::generate(m, prompts[0], o));
}

}  // namespace

TEST(GenerateBatch, LlamaRowsEqualSingleRows) {
  for (const char* a : {"", "lora", "prefix"}) check_batch_matches_single("llama", a);
}
TEST(GenerateBatch, Qwen2RowsEqualSingleRows) { check_batch_matches_single("qwen2", ""); }
TEST(GenerateBatch, Glm4RowsEqualSingleRows) {
  for (const char* a : {"", "lora", "prefix"}) check_batch_matches_single("glm4", a);
}
TEST(GenerateBatch, ChatGLM3RowsEqualSingleRows) { check_batch_matches_single("chatglm3", "prefix"); }

TEST(GenerateBatch, SyncedLoopMakesTheSameForwardCallsWhateverTheWork) {
  // keep_going stands in for the all-reduce of other ranks that are still generating: a
  // process with short rows, or none, keeps making (dummy) forward calls until told to stop.
  for (const char* type : {"llama", "glm4"}) {
    auto setup = tiny(type, "");
    auto& m = *setup.model;
    int64_t calls = 0;
    m.set_unit_runner([&calls](int64_t unit, const models::CausalLM::UnitFn& fn, const at::Tensor& x) {
      if (unit == 0) ++calls;
      return fn(x);
    });
    runtime::GenerateOptions o;
    o.max_new_tokens = 9;
    auto free_run = runtime::generate(m, {5, 6}, o);
    o.stop_ids = {free_run[1]};  // this row stops early (after two tokens, or one on a repeat)
    const int64_t stop_len = std::find(free_run.begin(), free_run.end(), free_run[1]) - free_run.begin() + 1;
    calls = 0;
    auto alone = runtime::generate_batch(m, {{5, 6}}, o);
    EXPECT_EQ(int64_t(alone[0].size()), stop_len) << type;
    EXPECT_EQ(calls, stop_len) << type;
    calls = 0;
    auto synced = runtime::generate_batch(m, {{5, 6}}, o, [](bool) { return true; });
    EXPECT_EQ(synced, alone) << type;
    EXPECT_EQ(calls, o.max_new_tokens) << type << ": one forward per step until the others are done";
    calls = 0;
    auto none = runtime::generate_batch(m, {}, o, [](bool) { return true; });
    EXPECT_TRUE(none.empty());
    EXPECT_EQ(calls, o.max_new_tokens) << type << ": a process without rows still takes part";
    // Stopping when every process is done: the flag this process reports is what ends it.
    calls = 0;
    int asked = 0;
    runtime::generate_batch(m, {{5, 6}}, o, [&asked](bool active) {
      ++asked;
      return active;
    });
    EXPECT_EQ(calls, stop_len) << type;
    EXPECT_EQ(asked, stop_len) << type;
    m.set_unit_runner(nullptr);
  }
}
