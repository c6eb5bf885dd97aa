// Tests of the sentencepiece tokenizer: training, loading, the special-token layout, byte
// fallback round trips and the error messages.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/tokenizer.h"
#include "tests/data/test_util.h"

namespace ftrun::data {
namespace {

using namespace ftrun::data::testing;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t sp_size(const Tokenizer& tok) {
  return tok.vocab_size() - static_cast<int64_t>(llama3_specials().size());
}

TEST(Tokenizer, SpecialsFollowTheSentencepieceVocabulary) {
  const Tokenizer& tok = tiny_tokenizer();
  const int64_t base = sp_size(tok);
  // hard_vocab_limit=false may stop below the request on a small corpus, but not far below;
  // 256 byte pieces are always there.
  EXPECT_GT(base, 300);
  EXPECT_LE(base, kTinyVocab);
  for (size_t i = 0; i < llama3_specials().size(); ++i) {
    const auto& name = llama3_specials()[i];
    EXPECT_TRUE(tok.has_special(name));
    EXPECT_EQ(tok.special_id(name), base + static_cast<int64_t>(i)) << name;
    EXPECT_TRUE(tok.is_special(base + static_cast<int64_t>(i)));
  }
  EXPECT_FALSE(tok.is_special(base - 1));
  EXPECT_FALSE(tok.is_special(5));
  EXPECT_FALSE(tok.has_special("<|im_end|>"));
  expect_error([&] { tok.special_id("<|im_end|>"); }, {"<|im_end|>", "tokenizer_config.json"});

  EXPECT_EQ(tok.bos_id(), tok.special_id("<|begin_of_text|>"));
  EXPECT_EQ(tok.eos_id(), tok.special_id("<|eot_id|>"));
  EXPECT_EQ(tok.pad_id(), tok.special_id("<|end_of_text|>"));
}

TEST(Tokenizer, RoundTripsAnyText) {
  const Tokenizer& tok = tiny_tokenizer();
  const std::vector<std::string> texts = {
      "What is 3 plus 4?",
      "The capital of Brindle is Quonta.",
      "  leading, trailing and  double  spaces  ",
      "line one\nline two\n\n\ttabbed\r\nCRLF",
      "Numbers 1234567890 and symbols ~!@#$%^&*()_+{}|:\"<>?",
      "你好，世界",
      "emoji 🦙🎉 mixed with text",
      "",
  };
  for (const auto& t : texts) {
    const auto ids = tok.encode(t);
    for (int64_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, sp_size(tok)) << "encode must never emit an added token";
    }
    EXPECT_EQ(tok.decode(ids), t);
    EXPECT_EQ(tok.decode(ids, false), t);
  }
  // The corpus has no CJK and no emoji: they fall back to one piece per UTF-8 byte.
  EXPECT_EQ(tok.encode("你好").size(), std::string("你好").size());
  EXPECT_EQ(tok.encode("🦙").size(), 4u);
  // Trained text compresses: fewer tokens than bytes.
  EXPECT_LT(tok.encode("The capital of Brindle is Quonta.").size(), 20u);
}

TEST(Tokenizer, SegmentsConcatenateExactly) {
  // No dummy prefix: the chat templates encode segments separately and rely on this.
  const Tokenizer& tok = tiny_tokenizer();
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"user", "\n\n"}, {"\n\n", "What is 3 plus 4?"}, {"cup moon", " star"}, {"a", ""}};
  for (const auto& [a, b] : pairs)
    EXPECT_EQ(tok.decode(cat({tok.encode(a), tok.encode(b)})), a + b);
  // Words at the start of a segment carry no "▁" marker, so a segment's first token is the
  // same whatever precedes it.
  EXPECT_EQ(tok.encode("What is 3 plus 4?").front(), tok.encode("What").front());
}

TEST(Tokenizer, SpecialTextInUserContentStaysText) {
  const Tokenizer& tok = tiny_tokenizer();
  const std::string text = "<|begin_of_text|>hi<|eot_id|>";
  const auto ids = tok.encode(text);
  for (int64_t id : ids) EXPECT_FALSE(tok.is_special(id));
  EXPECT_GT(ids.size(), 2u);
  EXPECT_EQ(tok.decode(ids), text);  // skip_special does not touch text that merely looks special
}

TEST(Tokenizer, DecodeSkipsSpecialsWhenAsked) {
  const Tokenizer& tok = tiny_tokenizer();
  const int64_t bos = tok.special_id("<|begin_of_text|>"), eot = tok.special_id("<|eot_id|>");
  const auto ids = cat({{bos}, tok.encode("Hi"), {eot}, tok.encode(" there 🦙"), {eot}});
  EXPECT_EQ(tok.decode(ids, true), "Hi there 🦙");
  EXPECT_EQ(tok.decode(ids, false), "<|begin_of_text|>Hi<|eot_id|> there 🦙<|eot_id|>");
  EXPECT_EQ(tok.decode({}), "");
}

TEST(Tokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  const Tokenizer& tok = tiny_tokenizer();
  expect_error([&] { tok.decode({1, tok.vocab_size()}); },
               {std::to_string(tok.vocab_size()), "outside the vocabulary"});
  expect_error([&] { tok.decode({-100}); }, {"-100"});
}

TEST(Tokenizer, WritesAnHfLikeConfig) {
  TempDir dir("cfg");
  train_tokenizer(corpus_path(), dir.path(), kTinyVocab, llama3_specials());
  EXPECT_TRUE(fs::exists(dir.file("tokenizer.model")));
  const auto cfg = nlohmann::json::parse(slurp(dir.file("tokenizer_config.json")));
  EXPECT_EQ(cfg.at("tokenizer_class"), "ftrun-sentencepiece");
  EXPECT_EQ(cfg.at("bos_token"), "<|begin_of_text|>");
  EXPECT_EQ(cfg.at("eos_token"), "<|eot_id|>");
  EXPECT_EQ(cfg.at("pad_token"), "<|end_of_text|>");
  const auto& added = cfg.at("added_tokens_decoder");
  ASSERT_EQ(added.size(), llama3_specials().size());
  const int64_t base = sp_size(tiny_tokenizer());
  const auto& eot = added.at(std::to_string(base + 4));
  EXPECT_EQ(eot.at("content"), "<|eot_id|>");
  EXPECT_EQ(eot.at("special"), true);
  EXPECT_EQ(eot.at("lstrip"), false);
  EXPECT_EQ(eot.at("rstrip"), false);
  EXPECT_EQ(eot.at("normalized"), false);
  EXPECT_EQ(eot.at("single_word"), false);
}

TEST(Tokenizer, TrainingIsDeterministicAndFingerprinted) {
  TempDir a("det_a"), b("det_b"), c("det_c");
  train_tokenizer(corpus_path(), a.path(), kTinyVocab, llama3_specials());
  train_tokenizer(corpus_path(), b.path(), kTinyVocab, llama3_specials());
  EXPECT_EQ(slurp(a.file("tokenizer.model")), slurp(b.file("tokenizer.model")));
  EXPECT_EQ(slurp(a.file("tokenizer_config.json")), slurp(b.file("tokenizer_config.json")));
  const auto ta = load_tokenizer(a.path()), tb = load_tokenizer(b.path());
  EXPECT_EQ(ta->fingerprint(), tb->fingerprint());
  EXPECT_EQ(ta->fingerprint(), tiny_tokenizer().fingerprint());
  EXPECT_EQ(ta->fingerprint().size(), 16u);

  // Other specials, or a different vocabulary, give another fingerprint.
  train_tokenizer(corpus_path(), c.path(), kTinyVocab, {"<|end_of_text|>", "<|eot_id|>"});
  const auto tc = load_tokenizer(c.path());
  EXPECT_NE(tc->fingerprint(), ta->fingerprint());
  // Only end_of_text + eot: eos is <|eot_id|>, pad <|end_of_text|>, no bos.
  EXPECT_EQ(tc->bos_id(), -1);
  EXPECT_EQ(tc->eos_id(), tc->special_id("<|eot_id|>"));
  EXPECT_EQ(tc->pad_id(), tc->special_id("<|end_of_text|>"));
  TempDir d("det_d");
  train_tokenizer(corpus_path(), d.path(), 400, llama3_specials());
  EXPECT_NE(load_tokenizer(d.path())->fingerprint(), ta->fingerprint());
}

TEST(Tokenizer, PadFallsBackToEos) {
  TempDir dir("pad");
  train_tokenizer(corpus_path(), dir.path(), kTinyVocab, {"<|eot_id|>"});
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->eos_id(), tok->special_id("<|eot_id|>"));
  EXPECT_EQ(tok->pad_id(), tok->eos_id());

  // HF also writes the named tokens as objects; an explicit pad wins over eos.
  const int64_t eot = tok->special_id("<|eot_id|>");
  auto cfg = nlohmann::json::parse(slurp(dir.file("tokenizer_config.json")));
  cfg["added_tokens_decoder"][std::to_string(eot + 1)] = {{"content", "<pad>"}, {"special", true}};
  cfg["pad_token"] = {{"content", "<pad>"}};
  dir.write("tokenizer_config.json", cfg.dump());
  tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->pad_id(), eot + 1);
  EXPECT_EQ(tok->vocab_size(), eot + 2);

  // No eos and no pad: 0.
  cfg.erase("pad_token");
  cfg.erase("eos_token");
  dir.write("tokenizer_config.json", cfg.dump());
  EXPECT_EQ(load_tokenizer(dir.path())->pad_id(), 0);
}

// Issue 16: tokenizer_config.json is parsed under the small-file bounds (nesting, value count),
// failing at once with the file's name instead of recursing 100k levels deep.
TEST(Tokenizer, TokenizerConfigParsingIsBounded) {
  TempDir dir("bounded");
  train_tokenizer(corpus_path(), dir.path(), kTinyVocab, {"<|eot_id|>"});
  std::string deep = "{\"x\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  dir.write("tokenizer_config.json", deep);
  expect_error([&] { load_tokenizer(dir.path()); }, {"tokenizer_config.json", "nested deeper than 64"});
  std::string many = "{\"x\": [";
  for (int i = 0; i < 300000; ++i) many += i ? ",0" : "0";
  dir.write("tokenizer_config.json", many + "]}");
  expect_error([&] { load_tokenizer(dir.path()); }, {"tokenizer_config.json", "JSON values"});
}

TEST(Tokenizer, LoadErrorsNameTheDirectoryAndFile) {
  TempDir dir("errors");
  expect_error([&] { load_tokenizer(dir.file("nope")); }, {dir.file("nope"), "does not exist"});
  expect_error([&] { load_tokenizer(dir.path()); }, {dir.path(), "tokenizer.model"});
  dir.write("tokenizer.model", "not a model");
  expect_error([&] { load_tokenizer(dir.path()); }, {dir.path(), "tokenizer_config.json"});
  dir.write("tokenizer_config.json", "{}");
  expect_error([&] { load_tokenizer(dir.path()); }, {dir.file("tokenizer.model"), "sentencepiece"});

  TempDir good("errors_cfg");
  train_tokenizer(corpus_path(), good.path(), kTinyVocab, llama3_specials());
  good.write("tokenizer_config.json", "{\"added_tokens_decoder\": ");
  expect_error([&] { load_tokenizer(good.path()); }, {"tokenizer_config.json", "invalid JSON"});
  good.write("tokenizer_config.json", R"({"added_tokens_decoder": {"x": {"content": "a"}}})");
  expect_error([&] { load_tokenizer(good.path()); }, {"tokenizer_config.json", "'x'"});
  good.write("tokenizer_config.json", R"({"eos_token": "<|nowhere|>"})");
  expect_error([&] { load_tokenizer(good.path()); }, {"eos_token", "<|nowhere|>"});
}

TEST(Tokenizer, TrainErrorsNameTheInput) {
  TempDir dir("train_err");
  expect_error([&] { train_tokenizer(dir.file("missing.txt"), dir.path(), 400, {}); },
               {dir.file("missing.txt")});
  expect_error(
      [&] { train_tokenizer(corpus_path(), dir.path(), 400, {"<|eot_id|>", "<|eot_id|>"}); },
      {"<|eot_id|>", "twice"});
}

}  // namespace
}  // namespace ftrun::data
