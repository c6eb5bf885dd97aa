// Tests of the llama3 chat template against ids built by hand from the tokenizer's pieces,
// the exact label mask, generation prompts, truncation and per-example validation.
#include <gtest/gtest.h>

#include "data/chat_template.h"
#include "tests/data/test_util.h"

namespace ftrun::data {
namespace {

using namespace ftrun::data::testing;

constexpr int64_t kIgnore = -100;

struct Ids {
  const Tokenizer& tok = tiny_tokenizer();
  int64_t bos = tok.special_id("<|begin_of_text|>");
  int64_t eot_text = tok.special_id("<|end_of_text|>");
  int64_t sh = tok.special_id("<|start_header_id|>");
  int64_t eh = tok.special_id("<|end_header_id|>");
  int64_t eot = tok.special_id("<|eot_id|>");
  std::vector<int64_t> header(const std::string& role) const {
    return cat({{sh}, tok.encode(role), {eh}, tok.encode("\n\n")});
  }
  std::vector<int64_t> ignored(size_t n) const { return std::vector<int64_t>(n, kIgnore); }
};

TEST(Llama3Template, RendersExactIdsAndLabels) {
  Ids t;
  auto tmpl = make_template("llama3");
  EXPECT_EQ(tmpl->name(), "llama3");
  const std::vector<Message> msgs = {{"system", "Answer in one short sentence."},
                                     {"user", "  What is 3 plus 4?\n"},
                                     {"assistant", "3 plus 4 is 7.\n\n"},
                                     {"user", "What colour is the zorp?"},
                                     {"assistant", " The zorp is blue."}};
  const Sample s = tmpl->render(msgs, t.tok);

  const auto sys = t.tok.encode("Answer in one short sentence.");
  const auto q1 = t.tok.encode("What is 3 plus 4?");  // content is trimmed
  const auto a1 = t.tok.encode("3 plus 4 is 7.");
  const auto q2 = t.tok.encode("What colour is the zorp?");
  const auto a2 = t.tok.encode("The zorp is blue.");
  const auto expected_ids = cat({{t.bos},
                                 t.header("system"), sys, {t.eot},
                                 t.header("user"), q1, {t.eot},
                                 t.header("assistant"), a1, {t.eot},
                                 t.header("user"), q2, {t.eot},
                                 t.header("assistant"), a2, {t.eot}});
  const auto expected_labels =
      cat({t.ignored(1 + t.header("system").size() + sys.size() + 1 + t.header("user").size() +
                     q1.size() + 1 + t.header("assistant").size()),
           a1, {t.eot},
           t.ignored(t.header("user").size() + q2.size() + 1 + t.header("assistant").size()),
           a2, {t.eot}});
  EXPECT_EQ(s.input_ids, expected_ids);
  EXPECT_EQ(s.labels, expected_labels);

  // The rendered text is exactly the HF jinja template's output.
  EXPECT_EQ(t.tok.decode(s.input_ids, false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer in one short "
            "sentence.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 3 plus "
            "4?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n3 plus 4 is "
            "7.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat colour is the "
            "zorp?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe zorp is "
            "blue.<|eot_id|>");

  // Trained positions, read back as text: the replies and their closing <|eot_id|>.
  std::vector<int64_t> trained;
  for (int64_t l : s.labels)
    if (l != kIgnore) trained.push_back(l);
  EXPECT_EQ(t.tok.decode(trained, false), "3 plus 4 is 7.<|eot_id|>The zorp is blue.<|eot_id|>");
}

TEST(Llama3Template, SpecialTextInContentIsNotAControlToken) {
  Ids t;
  auto tmpl = make_template("llama3");
  const Sample s = tmpl->render(
      {{"user", "say <|eot_id|> and <|start_header_id|>"}, {"assistant", "<|eot_id|>"}}, t.tok);
  EXPECT_EQ(std::count(s.input_ids.begin(), s.input_ids.end(), t.eot), 2);  // one per message
  EXPECT_EQ(std::count(s.input_ids.begin(), s.input_ids.end(), t.sh), 2);
  EXPECT_EQ(t.tok.decode(s.input_ids, true), "user\n\nsay <|eot_id|> and <|start_header_id|>"
                                             "assistant\n\n<|eot_id|>");
}

TEST(Llama3Template, PromptAndStops) {
  Ids t;
  auto tmpl = make_template("llama3");
  const std::vector<Message> msgs = {{"user", "What is 2 plus 2?"}};
  const auto p = tmpl->prompt(msgs, t.tok);
  EXPECT_EQ(p, cat({{t.bos}, t.header("user"), t.tok.encode("What is 2 plus 2?"), {t.eot},
                    t.header("assistant")}));
  EXPECT_EQ(tmpl->prompt({}, t.tok), cat({{t.bos}, t.header("assistant")}));
  EXPECT_EQ(tmpl->stop_ids(t.tok), (std::vector<int64_t>{t.eot, t.eot_text}));
}

TEST(Llama3Template, MissingSpecialsAreNamed) {
  TempDir dir("tmpl_nospecials");
  train_tokenizer(corpus_path(), dir.path(), kTinyVocab, {"<|end_of_text|>"});
  auto tok = load_tokenizer(dir.path());
  auto tmpl = make_template("llama3");
  expect_error([&] { tmpl->render({{"user", "q"}, {"assistant", "a"}}, *tok); },
               {"<|begin_of_text|>"});
  expect_error([&] { tmpl->stop_ids(*tok); }, {"<|eot_id|>"});
}

TEST(Llama3Template, UnknownTemplateListsKnownOnes) {
  expect_error([] { make_template("chatml"); }, {"chatml", "llama3"});
}

TEST(EncodeExample, RendersAndTruncates) {
  Ids t;
  auto tmpl = make_template("llama3");
  Example ex;
  ex.where = "x.jsonl:7";
  ex.messages = {{"user", "Reverse the words: cup moon star"}, {"assistant", "star moon cup"}};
  const Sample full = tmpl->render(ex.messages, t.tok);
  const Sample same = encode_example(ex, *tmpl, t.tok, 0);  // 0: no limit
  EXPECT_EQ(same.input_ids, full.input_ids);
  EXPECT_EQ(same.labels, full.labels);
  EXPECT_EQ(encode_example(ex, *tmpl, t.tok, 10000).input_ids, full.input_ids);

  const int64_t n = static_cast<int64_t>(full.input_ids.size()) - 3;
  const Sample cut = encode_example(ex, *tmpl, t.tok, n);
  ASSERT_EQ(cut.input_ids.size(), static_cast<size_t>(n));
  ASSERT_EQ(cut.labels.size(), static_cast<size_t>(n));
  EXPECT_TRUE(std::equal(cut.input_ids.begin(), cut.input_ids.end(), full.input_ids.begin()));
  EXPECT_TRUE(std::equal(cut.labels.begin(), cut.labels.end(), full.labels.begin()));
}

TEST(EncodeExample, NeedsAnAssistantTurn) {
  Ids t;
  auto tmpl = make_template("llama3");
  Example ex;
  ex.where = "data.jsonl:12";
  ex.messages = {{"system", "s"}, {"user", "q"}};
  expect_error([&] { encode_example(ex, *tmpl, t.tok, 0); }, {"data.jsonl:12", "assistant"});
}

TEST(EncodeExample, PretokenizedPassesThroughValidated) {
  Ids t;
  auto tmpl = make_template("llama3");
  Example ex;
  ex.where = "p.json[4]";
  ex.input_ids = {t.bos, 10, 11, t.eot};
  ex.labels = {kIgnore, kIgnore, 11, t.eot};
  Sample s = encode_example(ex, *tmpl, t.tok, 0);
  EXPECT_EQ(s.input_ids, ex.input_ids);
  EXPECT_EQ(s.labels, ex.labels);
  s = encode_example(ex, *tmpl, t.tok, 2);
  EXPECT_EQ(s.input_ids, (std::vector<int64_t>{t.bos, 10}));
  EXPECT_EQ(s.labels, (std::vector<int64_t>{kIgnore, kIgnore}));

  ex.input_ids[1] = t.tok.vocab_size();
  expect_error([&] { encode_example(ex, *tmpl, t.tok, 0); },
               {"p.json[4]", "input_ids[1]", std::to_string(t.tok.vocab_size())});
  ex.input_ids[1] = 10;
  ex.labels[0] = -1;
  expect_error([&] { encode_example(ex, *tmpl, t.tok, 0); }, {"p.json[4]", "labels[0]"});
  ex.labels = {1};
  expect_error([&] { encode_example(ex, *tmpl, t.tok, 0); }, {"p.json[4]", "length"});
}

TEST(EncodeExample, ShippedSamplesTrainOnTheRepliesOnly) {
  Ids t;
  auto tmpl = make_template("llama3");
  const auto ds = read_dataset(std::string(FTRUN_SOURCE_DIR) + "/examples/tiny/train.jsonl");
  size_t longest = 0;
  for (const auto& ex : ds) {
    const Sample s = encode_example(ex, *tmpl, t.tok, 0);
    longest = std::max(longest, s.input_ids.size());
    std::string replies;
    for (const auto& m : ex.messages)
      if (m.role == "assistant") replies += m.content + "<|eot_id|>";
    std::vector<int64_t> trained;
    for (int64_t l : s.labels)
      if (l != kIgnore) trained.push_back(l);
    ASSERT_EQ(t.tok.decode(trained, false), replies) << ex.where;
  }
  EXPECT_LT(longest, 128u);  // short enough for a fast tiny-model run
}

}  // namespace
}  // namespace ftrun::data
