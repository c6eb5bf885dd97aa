// fit_prompt on the llama3 template with the tiny tokenizer: the expected prompts are built
// with the template on hand-picked shorter conversations, and the cut case is checked piece
// by piece against ids spelled out from the tokenizer's special tokens.
#include <gtest/gtest.h>

#include "data/prompt_fit.h"
#include "tests/data/test_util.h"

namespace ftrun::data {
namespace {

using namespace ftrun::data::testing;

const std::vector<Message> kConversation = {
    {"system", "Answer briefly."},
    {"user", "What is 3 plus 4?"},
    {"assistant", "3 plus 4 is 7."},
    {"user", "And 10 plus 10?"},
    {"assistant", "That is 20."},
    {"user", "What colour is the zorp?"}};

TEST(FitPrompt, UnchangedWhenItFitsOrWithoutABudget) {
  const auto& tok = tiny_tokenizer();
  auto tmpl = make_template("llama3");
  const auto full = tmpl->prompt(kConversation, tok);
  for (int64_t budget : {int64_t(0), int64_t(full.size()), int64_t(full.size() + 50)}) {
    auto f = fit_prompt(*tmpl, kConversation, tok, budget);
    EXPECT_EQ(f.ids, full) << budget;
    EXPECT_EQ(f.dropped_messages, 0u);
    EXPECT_FALSE(f.cut);
  }
}

TEST(FitPrompt, DropsTheOldestExchangesAndKeepsTheSystemMessage) {
  const auto& tok = tiny_tokenizer();
  auto tmpl = make_template("llama3");
  const std::vector<Message> last_two = {kConversation[0], kConversation[3], kConversation[4], kConversation[5]};
  const std::vector<Message> last_one = {kConversation[0], kConversation[5]};
  const auto p2 = tmpl->prompt(last_two, tok), p1 = tmpl->prompt(last_one, tok);
  const auto full = tmpl->prompt(kConversation, tok);
  ASSERT_LT(p1.size(), p2.size());
  ASSERT_LT(p2.size(), full.size());

  auto f = fit_prompt(*tmpl, kConversation, tok, int64_t(full.size()) - 1);
  EXPECT_EQ(f.ids, p2);
  EXPECT_EQ(f.dropped_messages, 2u);
  EXPECT_FALSE(f.cut);
  f = fit_prompt(*tmpl, kConversation, tok, int64_t(p2.size()) - 1);
  EXPECT_EQ(f.ids, p1);
  EXPECT_EQ(f.dropped_messages, 4u);
  f = fit_prompt(*tmpl, kConversation, tok, int64_t(p1.size()));
  EXPECT_EQ(f.ids, p1);
  EXPECT_FALSE(f.cut);
}

TEST(FitPrompt, KeepsASystemMessageInsideADroppedExchange) {
  const auto& tok = tiny_tokenizer();
  auto tmpl = make_template("llama3");
  const std::vector<Message> msgs = {{"system", "Answer briefly."}, {"user", "What is 3 plus 4?"},
                                     {"assistant", "3 plus 4 is 7."}, {"system", "Now answer in French."},
                                     {"user", "What colour is the zorp?"}};
  const std::vector<Message> expected = {msgs[0], msgs[3], msgs[4]};
  const auto full = tmpl->prompt(msgs, tok), want = tmpl->prompt(expected, tok);
  ASSERT_LT(want.size(), full.size());
  auto f = fit_prompt(*tmpl, msgs, tok, int64_t(full.size()) - 1);
  EXPECT_EQ(f.ids, want);
  EXPECT_EQ(f.dropped_messages, 2u);
  EXPECT_FALSE(f.cut);
}

TEST(FitPrompt, CutsOneLongQuestionKeepingTheHeadAndTheGenerationHeader) {
  const auto& tok = tiny_tokenizer();
  auto tmpl = make_template("llama3");
  std::string long_q;
  for (int i = 0; i < 40; ++i) long_q += "the zorp is blue and ";
  long_q += "what colour is it?";
  const int64_t bos = tok.special_id("<|begin_of_text|>"), sh = tok.special_id("<|start_header_id|>"),
                eh = tok.special_id("<|end_header_id|>"), eot = tok.special_id("<|eot_id|>");
  auto header = [&](const std::string& role) { return cat({{sh}, tok.encode(role), {eh}, tok.encode("\n\n")}); };
  const auto sys = cat({header("system"), tok.encode("Answer briefly."), {eot}});
  const auto gen = header("assistant");

  const std::vector<Message> msgs = {{"system", "Answer briefly."}, {"user", long_q}};
  const auto full = tmpl->prompt(msgs, tok);
  const int64_t budget = 40;
  ASSERT_GT(int64_t(full.size()), budget);
  auto f = fit_prompt(*tmpl, msgs, tok, budget);
  EXPECT_TRUE(f.cut);
  EXPECT_EQ(f.dropped_messages, 0u);
  ASSERT_EQ(int64_t(f.ids.size()), budget);
  // Head: BOS, the system turn, the user header; tail: the full prompt's last tokens.
  const auto head = cat({{bos}, sys, header("user")});
  EXPECT_TRUE(std::equal(head.begin(), head.end(), f.ids.begin()));
  EXPECT_TRUE(std::equal(full.end() - (budget - int64_t(head.size())), full.end(), f.ids.begin() + head.size()));
  const auto tail = cat({{eot}, gen});
  EXPECT_TRUE(std::equal(tail.rbegin(), tail.rend(), f.ids.rbegin()));

  // A budget below the system turn: the head without it.
  const int64_t small = int64_t(1 + sys.size());
  f = fit_prompt(*tmpl, msgs, tok, small);
  ASSERT_EQ(int64_t(f.ids.size()), small);
  const auto bare = cat({{bos}, header("user")});
  EXPECT_TRUE(std::equal(bare.begin(), bare.end(), f.ids.begin()));
  EXPECT_EQ(f.ids.back(), gen.back());
}

}  // namespace
}  // namespace ftrun::data
