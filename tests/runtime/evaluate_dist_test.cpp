// Evaluation by generation across real processes (gloo over loopback, torchrun-style env):
// rows split i -> rank i % world, generated in batches, gathered on rank 0. At 2 ranks under
// ZeRO stage 3 (every forward a collective: the synced loop must keep the ranks in step
// although their rows stop at different lengths and one rank has a batch fewer) and stage 0,
// the predictions, scores and token counts equal the 1-rank run, within the deadline.
// Also: prediction_rows (prompt = conversation before the last assistant turn), its errors,
// and the predictions file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "comm/rank_info.h"
#include "comm/rendezvous.h"
#include "peft/strategy.h"
#include "runtime/evaluate.h"
#include "sharding/zero.h"
#include "tests/data/byte_tokenizer.h"
#include "testing/ranks.h"
#include "testing/tiny.h"

namespace fs = std::filesystem;
using namespace ftrun;
using data::testing::ByteTokenizer;

namespace {

const ByteTokenizer& llama3_bytes() {
  static const ByteTokenizer tok("llama3-bytes",
                                 {{"<|begin_of_text|>", 259}, {"<|end_of_text|>", 260}, {"<|start_header_id|>", 261},
                                  {"<|end_header_id|>", 262}, {"<|eot_id|>", 263}},
                                 264, 259, 263);
  return tok;
}

struct Fixture {
  std::shared_ptr<models::CausalLM> model;
  std::unique_ptr<peft::Strategy> strategy;
  std::vector<runtime::PredictRow> rows;
  runtime::PredictOptions options;
};

// The same model, rows and options in every process (seeded).
Fixture make() {
  Fixture f;
  f.model = ftrun::testing::make_tiny_model({ftrun::testing::tiny_spec(264, {32, 48, 4, 2}), 11, /*weight_std=*/0.2});
  f.strategy = peft::make_strategy({{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8},
                                    {"target_modules", {"q_proj", "v_proj"}}});
  f.strategy->apply(*f.model);
  {
    torch::NoGradGuard ng;
    for (auto& kv : f.strategy->trainable()) kv.second.normal_(0, 0.3);
  }
  const auto& tok = llama3_bytes();
  const std::vector<std::string> users = {"hi", "what is the capital of Pellune?", "ok", "reverse: cup snow hat",
                                          "count the words in this sentence please"};
  const std::vector<std::string> refs = {"hello there", "Harro", "fine", "hat snow cup", "six words"};
  auto tmpl = data::make_template("llama3");
  for (size_t i = 0; i < users.size(); ++i) {
    runtime::PredictRow r;
    r.prompt = tmpl->prompt({{"user", users[i]}}, tok);
    r.prompt_text = tok.decode(r.prompt, false);
    r.reference = refs[i];
    f.rows.push_back(r);
  }
  f.options.batch_size = 2;  // 5 rows on 2 ranks: rank 0 runs two batches, rank 1 one
  f.options.generate.max_new_tokens = 10;
  // A stop id that row 0 meets early, so rows end at different lengths.
  auto free_run = runtime::generate(*f.model, f.rows[0].prompt, f.options.generate);
  f.options.generate.stop_ids = {free_run[2]};
  // Two rows' references are their own greedy replies, so the scores are not all zero.
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& r : f.rows) prompts.push_back(r.prompt);
  auto outs = runtime::generate_batch(*f.model, prompts, f.options.generate);
  for (size_t i : {size_t(1), size_t(3)}) {
    auto ids = outs[i];
    if (!ids.empty() && ids.back() == free_run[2]) ids.pop_back();
    f.rows[i].reference = tok.decode(ids);
  }
  return f;
}

nlohmann::json run(int stage, std::shared_ptr<comm::Comm> comm) {
  auto f = make();
  std::vector<at::Tensor> params;
  std::vector<bool> decay;
  for (const auto& kv : f.strategy->trainable()) {
    params.push_back(kv.second);
    decay.push_back(false);
  }
  sharding::ZeroConfig zc;
  zc.stage = stage;
  sharding::ZeroEngine engine(*f.model, params, decay, comm, zc);
  f.options.synced = stage == 3;  // (without it, stage 3 at 2 ranks fails: gloo size mismatch)
  auto res = runtime::predict(*f.model, f.rows, llama3_bytes(), f.options, *comm);
  // Validation loss over the same rows (prompt masked, reference + <|eot_id|> scored), split
  // across the ranks in lock-step; with 5 rows and batch 2, rank 1 (of 2) runs a dummy batch.
  std::vector<data::Sample> samples;
  for (const auto& r : f.rows) {
    data::Sample smp;
    smp.input_ids = r.prompt;
    smp.labels.assign(r.prompt.size(), -100);
    for (auto id : llama3_bytes().encode(r.reference)) {
      smp.input_ids.push_back(id);
      smp.labels.push_back(id);
    }
    smp.input_ids.push_back(263);
    smp.labels.push_back(263);
    samples.push_back(smp);
  }
  auto [loss_sum, loss_count] = runtime::distributed_loss_sum_and_count(*f.model, samples, 2, 0, *comm);
  nlohmann::json j = {{"predictions", res.predictions}, {"scores", res.scores}, {"new_tokens", res.new_tokens},
                      {"loss_sum", loss_sum}, {"loss_count", loss_count}};
  return j;
}

void check(int stage, int world) {
  auto name = "s" + std::to_string(stage) + "_w" + std::to_string(world);
  ftrun::testing::LaunchOptions opts;
  const fs::path dir = ftrun::testing::shared_test_dir("eval_dist_" + name, opts);
  opts.timeout = std::chrono::seconds(90);
  opts.kill_all_on_failure = true;
  auto launched = ftrun::testing::run_in_ranks(
      world,
      [&] {
        auto comm = comm::init_comm(comm::detect_rank_info(), "gloo", std::chrono::seconds(30));
        auto j = run(stage, comm);
        if (comm->rank() == 0) std::ofstream(dir / "result.json") << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      },
      opts);
  ASSERT_TRUE(launched.ok()) << launched.report();

  // The 1-rank reference, and a check that the rows really end at different lengths.
  auto ref = run(0, comm::make_single_comm());
  {
    auto f = make();
    std::vector<std::vector<int64_t>> prompts;
    for (const auto& r : f.rows) prompts.push_back(r.prompt);
    std::set<size_t> lengths;
    for (const auto& out : runtime::generate_batch(*f.model, prompts, f.options.generate)) lengths.insert(out.size());
    EXPECT_GE(lengths.size(), 2u) << "rows should stop at different steps";
  }
  nlohmann::json got;
  std::ifstream(dir / "result.json") >> got;
  auto ref_dump = nlohmann::json::parse(ref.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  EXPECT_EQ(got["predictions"], ref_dump["predictions"]) << name;
  EXPECT_EQ(got["new_tokens"], ref_dump["new_tokens"]) << name;
  for (const char* k : {"rouge-1", "rouge-2", "rouge-l", "bleu-4"}) {
    ASSERT_TRUE(got["scores"].contains(k)) << name << " " << k;
    EXPECT_NEAR(got["scores"][k].get<double>(), ref_dump["scores"][k].get<double>(), 1e-9) << name << " " << k;
  }
  EXPECT_EQ(got["predictions"].size(), 5u);
  EXPECT_EQ(got["loss_count"], ref_dump["loss_count"]) << name;
  EXPECT_GT(got["loss_count"].get<int64_t>(), 0) << name;
  // Per-batch sums are fp32 and the ranks batch different rows (other padding): 1e-6.
  EXPECT_NEAR(got["loss_sum"].get<double>(), ref_dump["loss_sum"].get<double>(),
              1e-6 * std::abs(ref_dump["loss_sum"].get<double>())) << name;
  std::printf("%s: %.1f s, %lld new tokens, rouge-1 %.4f\n", name.c_str(), launched.seconds,
              (long long)got["new_tokens"].get<int64_t>(), got["scores"]["rouge-1"].get<double>());
  fs::remove_all(dir);
}

}  // namespace

TEST(EvaluateDist, Stage3TwoRanksEqualsOneRank) { check(3, 2); }
TEST(EvaluateDist, Stage0TwoRanksEqualsOneRank) { check(0, 2); }
TEST(EvaluateDist, Stage3ThreeRanksEqualsOneRank) { check(3, 3); }

TEST(Evaluate, PredictionRowsFromAFile) {
  auto dir = fs::temp_directory_path() / ("ftrun_eval_rows_" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto file = (dir / "val.jsonl").string();
  std::ofstream(file) << R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": " a1 "}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]})"
                      << "\n"
                      << R"({"instruction": "say hi", "output": "hi"})" << "\n";
  const auto& tok = llama3_bytes();
  auto tmpl = data::make_template("llama3");
  auto rows = runtime::prediction_rows(file, *tmpl, tok, 0);
  ASSERT_EQ(rows.size(), 2u);
  // The prompt holds the first exchange and asks for the second reply.
  std::vector<data::Message> ctx = {{"system", "Be brief."}, {"user", "q1"}, {"assistant", " a1 "}, {"user", "q2"}};
  EXPECT_EQ(rows[0].prompt, tmpl->prompt(ctx, tok));
  EXPECT_EQ(rows[0].reference, "a2");
  EXPECT_NE(rows[0].prompt_text.find("<|start_header_id|>assistant<|end_header_id|>"), std::string::npos);
  EXPECT_EQ(rows[1].reference, "hi");

  runtime::write_predictions((dir / "p.jsonl").string(), rows, {"x", "y\nz"});
  std::ifstream in(dir / "p.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_TRUE(j.contains("prompt") && j.contains("reference") && j.contains("prediction"));
    ++n;
  }
  EXPECT_EQ(n, 2);

  // Errors name the file (and line).
  auto expect_error = [&](const std::string& path, const std::string& what) {
    try {
      runtime::prediction_rows(path, *tmpl, tok, 0);
      ADD_FAILURE() << "no error for " << path;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error((dir / "missing.jsonl").string(), "missing.jsonl: evaluation data file not found");
  std::ofstream(dir / "noreply.jsonl") << R"({"messages": [{"role": "user", "content": "q"}]})" << "\n";
  expect_error((dir / "noreply.jsonl").string(), "noreply.jsonl:1");

  // glm4: the GLM-4 demo's rows; combine=false answers every assistant message.
  const auto& glm = data::testing::glm4_tokenizer();
  auto glm4 = data::make_template("glm4");
  auto both = runtime::prediction_rows(file, *glm4, glm, 0, /*combine=*/false);
  ASSERT_EQ(both.size(), 3u);
  EXPECT_EQ(both[0].reference, "a1");
  EXPECT_EQ(both[1].reference, "a2");
  EXPECT_EQ(both[0].prompt.back(), glm.special_id("<|assistant|>"));
  EXPECT_LT(both[0].prompt.size(), both[1].prompt.size());
  auto last = runtime::prediction_rows(file, *glm4, glm, 0, /*combine=*/true);
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[0].prompt, both[1].prompt);
  EXPECT_EQ(last[0].reference, "a2");
  fs::remove_all(dir);
}
