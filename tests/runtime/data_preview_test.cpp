// Tests of `ftrun data` (runtime/data_preview.h, launcher/data_command.cpp):
//  - the GLM-4 tool-call conversation on the embedded tiny glm4 model: the tokens the preview
//    marks are exactly those whose label the trainer's sample carries (RunSetup::encode, and
//    the demo's own glm4_demo_sample), token by token, through the real `ftrun data` binary;
//    the marked text is the demo's target, spelled out by hand;
//  - the statistics against a hand count on a small pre-tokenized file;
//  - a bad row fails with training's file:line / field error, word for word.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "comm/comm.h"
#include "data/dataset.h"
#include "data/templates/glm.h"
#include "runtime/config.h"
#include "runtime/data_preview.h"
#include "runtime/run_setup.h"
#include "testing/errors.h"
#include "testing/glm4_tool_call.h"

namespace ftrun::runtime {
namespace {

namespace fs = std::filesystem;
using ftrun::testing::error_of;
using ftrun::testing::ScratchDir;

const std::string kFtrun = FTRUN_BINARY_DIR "/ftrun";
const std::string kGlm4Config = FTRUN_SOURCE_DIR "/configs/tiny/glm4-lora.yaml";
const std::string kLlamaConfig = FTRUN_SOURCE_DIR "/configs/tiny/lora.yaml";

using namespace ftrun::testing::glm4_tool_call;  // the demo tool-call record and its texts

struct Ran {
  int status = -1;
  std::string output;  // stdout and stderr together
};

Ran run(const std::string& cmd) {
  Ran r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string write(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

// --set arguments that point a shipped config at a data file in `dir` and outputs into it.
std::vector<std::string> sets_for(const ScratchDir& dir, const std::string& file, const std::string& model) {
  return {"model_dir=" FTRUN_SOURCE_DIR "/examples/tiny/" + model,
          "data_dir=" + dir.path.string(),
          "data_config.train_file=" + file,
          "data_config.val_file=" + file,
          "data_config.test_file=" + file,
          "training_args.output_dir=" + (dir.path / "out").string()};
}

std::string cli(const std::string& sub, const std::string& config, const std::vector<std::string>& sets,
                const std::string& extra = "") {
  std::string cmd = "cd " FTRUN_SOURCE_DIR " && " + kFtrun + (sub.empty() ? "" : " " + sub) + " " + config;
  for (const auto& s : sets) cmd += " --set '" + s + "'";
  return cmd + " " + extra;
}

// The lines of `ftrun data --tokens` for one sample: position, id, label, loss mark.
struct TokenLine {
  int64_t pos, id, label;
  bool marked;
};

std::vector<TokenLine> token_lines(const std::string& out) {
  std::vector<TokenLine> lines;
  std::istringstream in(out);
  std::string line;
  const std::regex re(R"(^ *(\d+) +(-?\d+) +(-?\d+) ([* ]) .*$)");
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_match(line, m, re))
      lines.push_back({std::stoll(m[1]), std::stoll(m[2]), std::stoll(m[3]), m[4] == "*"});
  return lines;
}

// ---- the tiny GLM-4 tool-call sample ---------------------------------------------------

void check_tool_sample(bool combine, const std::string& expected_text) {
  ScratchDir dir;
  write(dir.path / "tools.jsonl", std::string(kToolRecord) + "\n");
  auto sets = sets_for(dir, "tools.jsonl", "glm4-model");
  // Long limits: the tool schema alone is hundreds of byte tokens in the tiny vocabulary.
  sets.insert(sets.end(), {std::string("combine=") + (combine ? "true" : "false"), "max_input_length=2048",
                           "max_output_length=512"});
  const auto cfg = load_config(kGlm4Config, sets);
  const auto setup = setup_run(cfg, 1);
  auto single = comm::make_single_comm();

  // The trainer's sample (its own call), and the demo's rule applied directly.
  const auto trained = setup.encode(cfg.data_config.train_file, *single);
  ASSERT_EQ(trained.size(), 1u);
  const auto messages = data::read_dataset(cfg.data_config.train_file).at(0).messages;
  const data::Sample demo =
      data::glm4_demo_sample(messages, *setup.tokenizer, combine, cfg.max_input_length, cfg.max_output_length);
  EXPECT_EQ(trained[0].input_ids, demo.input_ids);
  EXPECT_EQ(trained[0].labels, demo.labels);

  // The library view: the same sample, rendered with the hand-written marked text.
  const auto p = preview_data(setup, "train", *single);
  ASSERT_EQ(p.samples.size(), 1u);
  EXPECT_EQ(p.samples[0].input_ids, trained[0].input_ids);
  EXPECT_EQ(p.samples[0].labels, trained[0].labels);
  EXPECT_EQ(render_sample(p.samples[0], *setup.tokenizer, false), expected_text);

  // The binary: every listed token, in order, with the trainer's id and label, marked
  // exactly where the label is not -100; the text view is the same hand-written text.
  const Ran r = run(cli("data", kGlm4Config, sets, "--show 1 --tokens --color never"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\n" + expected_text + "\n"), std::string::npos) << r.output;
  const auto lines = token_lines(r.output);
  const auto& s = trained[0];
  ASSERT_EQ(lines.size(), s.input_ids.size()) << r.output;
  int64_t marked = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].pos, int64_t(i));
    EXPECT_EQ(lines[i].id, s.input_ids[i]) << "token " << i;
    EXPECT_EQ(lines[i].label, s.labels[i]) << "token " << i;
    EXPECT_EQ(lines[i].marked, s.labels[i] != -100) << "token " << i;
    marked += lines[i].marked;
  }
  EXPECT_GT(marked, 0);
  EXPECT_NE(r.output.find(std::to_string(s.input_ids.size()) + " tokens, " + std::to_string(marked) + " carry loss"),
            std::string::npos)
      << r.output;
}

std::string tool_prefix() {
  return std::string("[gMASK]<sop><|system|>") + kToolsText + "<|user|>\n北京天气怎么样？<|assistant|>";
}

TEST(DataPreview, Glm4ToolCallCombineMarksOnlyTheLastReply) {
  // combine=true: loss after the last <|assistant|>, without the "\n" after it, through the
  // closing <|user|> the demo appends.
  check_tool_sample(true, tool_prefix() + "\n" + kCall + "<|observation|>\n" + kResult + "<|assistant|>\n[[" +
                              kAnswer + "<|user|>]]");
}

TEST(DataPreview, Glm4ToolCallPerMessageMarksEveryAssistantTurn) {
  // combine=false: each assistant message from its "\n" through the token after it (the mask
  // shifted by one): the call with the <|observation|> that follows, the answer with <|user|>.
  check_tool_sample(false, tool_prefix() + "[[\n" + kCall + "<|observation|>]]\n" + kResult + "<|assistant|>[[\n" +
                               kAnswer + "<|user|>]]");
}

// ---- statistics against a hand count -------------------------------------------------

// Pre-tokenized rows (ids in the tiny vocabulary, "." = label -100), so every length is
// countable by hand. configs/tiny/lora.yaml's llama3 template cuts at max_input_length +
// max_output_length = 4 + 3 = 7 tokens.
//   row  len  labels            prompt  response  cut      kept  loss counted (positions >= 1)
//   1    5    . . . 13 14       3       2         -        5     2
//   2    9    . x5 25 26 27 28  5 (+1)  4 (+1)    2 (2 loss) 7   2 (25, 26)
//   3    10   . x8 38 39        8 (+4)  2         3 (2 loss) 7   0  <- left without loss
//   4    4    40 . 42 43        0       4 (+1)    -        4     2 (label 0 is never counted)
//   5    7    . . 46 .. 50      2       5 (+2)    -        7     5 (exactly the cut: not cut)
// rows 5; cut 2 rows, 5 tokens, at most 3, 4 loss tokens removed; 1 row left without loss;
// prompts over 4: rows 2, 3 -> 2 rows, 1 + 4 = 5 tokens, at most 4;
// responses over 3: rows 2, 4, 5 -> 3 rows, 1 + 1 + 2 = 4 tokens, at most 2;
// prompt lengths sorted 0 2 3 5 8: p50 = 3rd = 3, p90 = p99 = 5th = 8, max 8;
// response lengths sorted 2 2 4 4 5: p50 = 4, p90 = p99 = max = 5;
// kept lengths sorted 4 5 7 7 7: all 7;
// tokens 5 + 7 + 7 + 4 + 7 = 30, loss 2 + 2 + 0 + 2 + 5 = 11 (36.67%).
// Padding (right, to the batch's longest row = 7, whatever the shuffled order):
//   batch size 5: one batch, 5 x 7 = 35 slots, 35 - 30 = 5 pads (14.29%);
//   batch size 10: one batch, epoch 0's 5 rows then epoch 1's 5: 70 slots, 70 - 60 = 10 pads;
//   batch size 1: 5 batches of their own length, 30 slots, no padding.
const char* const kStatsRows =
    R"({"input_ids": [10, 11, 12, 13, 14], "labels": [-100, -100, -100, 13, 14]})" "\n"
    R"({"input_ids": [20, 21, 22, 23, 24, 25, 26, 27, 28], "labels": [-100, -100, -100, -100, -100, 25, 26, 27, 28]})" "\n"
    R"({"input_ids": [30, 31, 32, 33, 34, 35, 36, 37, 38, 39], "labels": [-100, -100, -100, -100, -100, -100, -100, -100, 38, 39]})" "\n"
    R"({"input_ids": [40, 41, 42, 43], "labels": [40, -100, 42, 43]})" "\n"
    R"({"input_ids": [44, 45, 46, 47, 48, 49, 50], "labels": [-100, -100, 46, 47, 48, 49, 50]})" "\n";

DataPreview stats_preview(const ScratchDir& dir, int64_t batch_size, const std::string& split = "train") {
  write(dir.path / "stats.jsonl", kStatsRows);
  auto sets = sets_for(dir, "stats.jsonl", "model");
  sets.insert(sets.end(), {"max_input_length=4", "max_output_length=3",
                           "training_args.per_device_train_batch_size=" + std::to_string(batch_size),
                           "training_args.per_device_eval_batch_size=" + std::to_string(batch_size)});
  const auto cfg = load_config(kLlamaConfig, sets);
  const auto setup = setup_run(cfg, 1);
  auto single = comm::make_single_comm();
  return preview_data(setup, split, *single);
}

TEST(DataPreview, StatisticsMatchAHandCount) {
  ScratchDir dir;
  const DataPreview p = stats_preview(dir, 5);
  const DataStats& st = p.stats;
  EXPECT_EQ(st.rows, 5);
  EXPECT_EQ(st.cut_length, 7);
  EXPECT_EQ(st.cut_rows, 2);
  EXPECT_EQ(st.cut_tokens, 5);
  EXPECT_EQ(st.cut_max, 3);
  EXPECT_EQ(st.cut_loss_tokens, 4);
  EXPECT_EQ(st.no_loss_rows, 1);
  EXPECT_EQ(st.prompt_over, 2);
  EXPECT_EQ(st.prompt_over_tokens, 5);
  EXPECT_EQ(st.prompt_over_max, 4);
  EXPECT_EQ(st.response_over, 3);
  EXPECT_EQ(st.response_over_tokens, 4);
  EXPECT_EQ(st.response_over_max, 2);
  EXPECT_EQ((std::vector<int64_t>{st.prompt.p50, st.prompt.p90, st.prompt.p99, st.prompt.max}),
            (std::vector<int64_t>{3, 8, 8, 8}));
  EXPECT_EQ((std::vector<int64_t>{st.response.p50, st.response.p90, st.response.p99, st.response.max}),
            (std::vector<int64_t>{4, 5, 5, 5}));
  EXPECT_EQ((std::vector<int64_t>{st.trained.p50, st.trained.p90, st.trained.p99, st.trained.max}),
            (std::vector<int64_t>{7, 7, 7, 7}));
  EXPECT_EQ(st.tokens, 30);
  EXPECT_EQ(st.loss_tokens, 11);
  EXPECT_EQ(st.batches, 1);
  EXPECT_EQ(st.slots, 35);
  EXPECT_EQ(st.pad_slots, 5);
  // Where each row came from, for the sample headers.
  EXPECT_EQ(p.where.at(2), (dir.path / "stats.jsonl").string() + ":3");

  const std::string text = format_stats(st);
  for (const char* line : {
           "rows: 5 ",
           "cut at 7 tokens (max_input_length 4 + max_output_length 3, one right cut as training makes it)",
           "  rows cut: 2 (5 tokens removed, at most 3 from one row; 4 of them carried loss)",
           "  rows left without loss: 1 ",
           "  prompts longer than max_input_length 4: 2 rows (by 5 tokens in all, at most 4)",
           "  responses longer than max_output_length 3: 3 rows (by 4 tokens in all, at most 2)",
           "  prompt (before the cut)               3        8        8        8",
           "  response (before the cut)             4        5        5        5",
           "  trained sample (after the cut)        7        7        7        7",
           "loss tokens: 11 of 30 trained tokens (36.67%)",
           "padding at per_device_train_batch_size 5: 5 of 35 token slots in 1 batch (14.29%)"})
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
}

TEST(DataPreview, PaddingFollowsTheTrainersBatches) {
  ScratchDir dir;
  {
    // A batch larger than the data runs into the next epoch's order, as the trainer's stream.
    const auto st = stats_preview(dir, 10).stats;
    EXPECT_EQ(st.batches, 1);
    EXPECT_EQ(st.slots, 70);
    EXPECT_EQ(st.pad_slots, 10);
  }
  {
    const auto st = stats_preview(dir, 1).stats;
    EXPECT_EQ(st.batches, 5);
    EXPECT_EQ(st.slots, 30);
    EXPECT_EQ(st.pad_slots, 0);
  }
  {
    // Evaluation splits: per_device_eval_batch_size in file order; batch size 2 gives rows
    // (1,2) (3,4) (5): 2 x 7 + 2 x 7 + 7 = 35 slots, pads (7-5) + (7-4) = 5.
    const auto st = stats_preview(dir, 2, "val").stats;
    EXPECT_EQ(st.batch_size_key, "per_device_eval_batch_size");
    EXPECT_EQ(st.batches, 3);
    EXPECT_EQ(st.slots, 35);
    EXPECT_EQ(st.pad_slots, 5);
  }
}

TEST(DataPreview, TheBinaryPrintsTheSameStatisticsTwiceThroughTheCache) {
  ScratchDir dir;
  write(dir.path / "stats.jsonl", kStatsRows);
  auto sets = sets_for(dir, "stats.jsonl", "model");
  sets.insert(sets.end(), {"max_input_length=4", "max_output_length=3", "training_args.per_device_train_batch_size=5"});
  const Ran first = run(cli("data", kLlamaConfig, sets, "--show 5"));
  ASSERT_EQ(first.status, 0) << first.output;
  // The token cache training uses was written (and is read the second time).
  ASSERT_TRUE(fs::exists(dir.path / "out" / ".ftrun_cache")) << first.output;
  const Ran second = run(cli("data", kLlamaConfig, sets, "--show 5"));
  EXPECT_EQ(second.output, first.output);
  EXPECT_NE(first.output.find("loss tokens: 11 of 30 trained tokens (36.67%)"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("-- sample 3: " + (dir.path / "stats.jsonl").string() + ":3 | 7 tokens (cut from 10), "
                              "0 carry loss"),
            std::string::npos)
      << first.output;
  // Not a TTY: no escape codes, brackets instead. Row 4 (ids 40..43 are the bytes % & ' ( in
  // the tiny vocabulary) shows its position-0 label marked too; row 1's control bytes are
  // escaped, its newline and tab printed as they are.
  EXPECT_EQ(first.output.find('\033'), std::string::npos);
  EXPECT_NE(first.output.find("\n[[%]]&[['(]]\n"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("\n\\x07\\x08\t[[\n\\x0B]]\n"), std::string::npos) << first.output;
  // --color always: the marked runs in bold green instead.
  const Ran color = run(cli("data", kLlamaConfig, sets, "--show 5 --color always"));
  EXPECT_NE(color.output.find("\n\033[1;32m%\033[0m&\033[1;32m'(\033[0m\n"), std::string::npos) << color.output;
}

// ---- bad rows ----------------------------------------------------------------------

TEST(DataPreview, ABadRowFailsAsTrainingFails) {
  ScratchDir dir;
  write(dir.path / "bad.jsonl",
        R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})" "\n"
        R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]})" "\n");
  const auto sets = sets_for(dir, "bad.jsonl", "model");
  const std::string expected =
      (dir.path / "bad.jsonl").string() + ":2: field 'messages[1].content' must be a string, got number";

  // In the library: the same message as the trainer's encode.
  const auto cfg = load_config(kLlamaConfig, sets);
  const auto setup = setup_run(cfg, 1);
  auto single = comm::make_single_comm();
  EXPECT_EQ(error_of([&] { setup.encode(cfg.data_config.train_file, *single); }), expected);
  EXPECT_EQ(error_of([&] { preview_data(setup, "train", *single); }), expected);

  // Through the binaries: `ftrun data` and training print the same error line.
  const auto error_line = [](const std::string& out) {
    const size_t at = out.find("ftrun: error: ");
    return at == std::string::npos ? out : out.substr(at, out.find('\n', at) - at);
  };
  const Ran data = run(cli("data", kLlamaConfig, sets));
  const Ran train = run(cli("", kLlamaConfig, sets));
  EXPECT_EQ(data.status, 1) << data.output;
  EXPECT_EQ(train.status, 1) << train.output;
  EXPECT_EQ(error_line(data.output), "ftrun: error: " + expected) << data.output;
  EXPECT_EQ(error_line(data.output), error_line(train.output)) << train.output;
}

TEST(DataPreview, SplitsAndPercentiles) {
  EXPECT_EQ((std::vector<int64_t>{length_stats({}).p50, length_stats({}).max}), (std::vector<int64_t>{0, 0}));
  // 1..100: nearest rank p50 = 50, p90 = 90, p99 = 99.
  std::vector<int64_t> v;
  for (int64_t i = 100; i >= 1; --i) v.push_back(i);
  const auto ls = length_stats(v);
  EXPECT_EQ((std::vector<int64_t>{ls.p50, ls.p90, ls.p99, ls.max}), (std::vector<int64_t>{50, 90, 99, 100}));

  ScratchDir dir;
  write(dir.path / "stats.jsonl", kStatsRows);
  auto sets = sets_for(dir, "stats.jsonl", "model");
  sets.push_back("data_config.test_file=\"\"");
  const auto cfg = load_config(kLlamaConfig, sets);
  const auto setup = setup_run(cfg, 1);
  EXPECT_EQ(split_file(setup, "val"), (dir.path / "stats.jsonl").string());
  EXPECT_NE(error_of([&] { split_file(setup, "test"); }).find("data_config.test_file is not set"), std::string::npos);
  EXPECT_NE(error_of([&] { split_file(setup, "dev"); }).find("--split must be train, val or test"), std::string::npos);
}

}  // namespace
}  // namespace ftrun::runtime
