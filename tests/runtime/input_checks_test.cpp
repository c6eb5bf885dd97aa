// Issue 16's checks of generation input and token ids, below the CLI (whose flags
// tests/e2e/input_checks_test.sh covers): check_generate_options refuses NaN, negative and
// out-of-range sampling values naming the field; generate() refuses a prompt longer than the
// model's context (and accepts one of exactly the context); check_token_ids names a special
// token, or a config.json id, beyond the model's vocabulary.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "data/tokenizer.h"
#include "models/config.h"
#include "models/model.h"
#include "runtime/generate.h"
#include "runtime/run_setup.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

// The error of f(), or "" when it returned.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST(GenerateInputChecks, SamplingOptionsAreValidatedNamingTheField) {
  auto with = [](auto set) {
    runtime::GenerateOptions o;
    o.do_sample = true;
    set(o);
    return error_of([&] { runtime::check_generate_options(o); });
  };
  EXPECT_EQ(with([](auto&) {}), "");
  EXPECT_NE(with([](auto& o) { o.temperature = kNaN; }).find("temperature must be"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.temperature = -0.5; }).find("(got -0.5)"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.temperature = std::numeric_limits<double>::infinity(); }).find("temperature"),
            std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_p = 0; }).find("top_p must be in (0, 1]"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_p = 1.5; }).find("top_p"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_p = kNaN; }).find("top_p"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.top_k = -1; }).find("top_k must be >= 0"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.repetition_penalty = 0; }).find("repetition_penalty"), std::string::npos);
  EXPECT_NE(with([](auto& o) { o.repetition_penalty = kNaN; }).find("repetition_penalty"), std::string::npos);
  // Greedy decoding ignores the sampling fields (HF warns and ignores them too).
  runtime::GenerateOptions greedy;
  greedy.temperature = kNaN;
  EXPECT_EQ(error_of([&] { runtime::check_generate_options(greedy); }), "");
}

TEST(GenerateInputChecks, PromptLongerThanTheContextIsRefusedWithItsLength) {
  auto spec = ftrun::testing::tiny_spec(50);
  spec.max_position_embeddings = 16;
  auto model = ftrun::testing::make_tiny_model({spec, 3});
  runtime::GenerateOptions o;
  o.max_new_tokens = 4;
  std::vector<int64_t> prompt(17, 7);
  const auto msg = error_of([&] { runtime::generate(*model, prompt, o); });
  EXPECT_NE(msg.find("the prompt is 17 tokens, longer than the model's context of 16 tokens "
                     "(max_position_embeddings in tiny)"),
            std::string::npos)
      << msg;
  // Exactly the context fits: one new token, then generation stops at the table's end.
  prompt.resize(16);
  std::vector<int64_t> out;
  EXPECT_EQ(error_of([&] { out = runtime::generate(*model, prompt, o); }), "");
  EXPECT_EQ(out.size(), 1u);
}

TEST(GenerateInputChecks, TokenIdsBeyondTheVocabularyAreNamed) {
  const std::string dir = std::string(FTRUN_SOURCE_DIR) + "/examples/tiny/model";
  auto tok = data::load_tokenizer(dir);
  auto mc = models::load_model_config(dir);  // vocab_size 405: specials 400..404
  EXPECT_EQ(error_of([&] { runtime::check_token_ids(mc, *tok, dir); }), "");
  auto small = mc;
  small.vocab_size = 403;
  small.bos_token_id = small.pad_token_id = 0;
  small.eos_token_id = {1};
  const auto msg = error_of([&] { runtime::check_token_ids(small, *tok, dir); });
  EXPECT_NE(msg.find(dir + "/tokenizer_config.json: special token '<|end_header_id|>' has id 403, beyond the "
                           "model's vocabulary of 403 (vocab_size in " + mc.path + ")"),
            std::string::npos)
      << msg;
  auto eos = mc;
  eos.eos_token_id = {404, 999};
  EXPECT_NE(error_of([&] { runtime::check_token_ids(eos, *tok, dir); })
                .find("eos_token_id is 999, beyond the model's vocabulary of 405"),
            std::string::npos);
}
