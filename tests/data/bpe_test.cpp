// Tests of the byte-level BPE tokenizer (data/bpe_tokenizer.*): golden ids from independent
// implementations (tests/data/golden, made by make_golden.mjs from the npm packages tiktoken and
// llama3-tokenizer-js) over the real cl100k_base and Llama-3 vocabularies in every file form,
// plus small hand-built tokenizers for the rules the golden corpus cannot isolate.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "data/bpe_tokenizer.h"
#include "testing/golden_files.h"
#include "tests/data/test_util.h"

namespace ftrun::data {
namespace {

using testing::expect_error;
using testing::TempDir;
using ftrun::testing::base64;
using ftrun::testing::gunzip;
using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kGolden = std::string(FTRUN_SOURCE_DIR) + "/tests/data/golden/";

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return json::parse(in);
}

json added_decoder(const std::vector<std::pair<int64_t, std::string>>& tokens,
                   bool special = true) {
  json d = json::object();
  for (const auto& [id, content] : tokens)
    d[std::to_string(id)] = {{"content", content}, {"special", special}};
  return d;
}

// Model directories over the golden vocabularies, each made on first use (ctest runs every
// test in its own process, so a test pays only for the vocabularies it touches).
class Vocabularies {
 public:
  static Vocabularies& get() {
    static Vocabularies v;
    return v;
  }

  const std::string& cl100k_dir() {
    return cl100k_dir_.empty() ? (cl100k_dir_ = make_cl100k("cl100k", {})) : cl100k_dir_;
  }
  // Same ranks, Qwen2's regex picked by tokenizer_class.
  const std::string& cl100k_qwen2_dir() {
    if (qwen2_dir_.empty())
      qwen2_dir_ = make_cl100k("cl100k_qwen2", {{"tokenizer_class", "Qwen2Tokenizer"}});
    return qwen2_dir_;
  }
  const std::string& llama3_json_dir() {
    if (llama3_json_dir_.empty()) {
      llama3_json_dir_ = root_.file("llama3_json");
      fs::create_directories(llama3_json_dir_);
      std::ofstream(llama3_json_dir_ + "/tokenizer.json", std::ios::binary)
          << gunzip(kGolden + "llama3.tokenizer.json.gz");
      std::ofstream(llama3_json_dir_ + "/tokenizer_config.json")
          << json{{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"}}.dump();
    }
    return llama3_json_dir_;
  }
  // Meta's original/tokenizer.model form of the same vocabulary (rank = id), with the 256
  // specials listed the way GLM-4's tokenizer_config.json lists its own.
  const std::string& llama3_tiktoken_dir() {
    if (llama3_tiktoken_dir_.empty()) {
      const BpeTokenizer& from = llama3_json();
      llama3_tiktoken_dir_ = root_.file("llama3_tiktoken");
      fs::create_directories(llama3_tiktoken_dir_);
      std::ofstream model(llama3_tiktoken_dir_ + "/tokenizer.model", std::ios::binary);
      for (int64_t id = 0; id < 128000; ++id)
        model << base64(from.token_bytes(id)) << ' ' << id << '\n';
      std::vector<std::pair<int64_t, std::string>> specials;
      for (int64_t id = 128000; id < 128256; ++id) specials.emplace_back(id, from.token_bytes(id));
      std::ofstream(llama3_tiktoken_dir_ + "/tokenizer_config.json") << json{
          {"added_tokens_decoder", added_decoder(specials)},
          {"tokenizer_class", "PreTrainedTokenizerFast"},
          {"bos_token", "<|begin_of_text|>"},
          {"eos_token", "<|eot_id|>"}}.dump();
    }
    return llama3_tiktoken_dir_;
  }

  const BpeTokenizer& cl100k() { return cached(cl100k_, cl100k_dir()); }
  const BpeTokenizer& cl100k_qwen2() { return cached(qwen2_, cl100k_qwen2_dir()); }
  const BpeTokenizer& llama3_json() { return cached(llama3_json_, llama3_json_dir()); }
  const BpeTokenizer& llama3_tiktoken() { return cached(llama3_tiktoken_, llama3_tiktoken_dir()); }

 private:
  static const BpeTokenizer& cached(std::unique_ptr<BpeTokenizer>& slot, const std::string& dir) {
    if (!slot) slot = BpeTokenizer::load(dir);
    return *slot;
  }

  std::string make_cl100k(const std::string& name, json config) {
    const std::string dir = root_.file(name);
    fs::create_directories(dir);
    std::ofstream(dir + "/tokenizer.model", std::ios::binary)
        << gunzip(kGolden + "cl100k_base.tiktoken.gz");
    config["added_tokens_decoder"] = added_decoder({{100257, "<|endoftext|>"},
                                                    {100258, "<|fim_prefix|>"},
                                                    {100259, "<|fim_middle|>"},
                                                    {100260, "<|fim_suffix|>"},
                                                    {100276, "<|endofprompt|>"}});
    config["eos_token"] = "<|endoftext|>";
    std::ofstream(dir + "/tokenizer_config.json") << config.dump();
    return dir;
  }

  TempDir root_{"bpe"};
  std::string cl100k_dir_, qwen2_dir_, llama3_json_dir_, llama3_tiktoken_dir_;
  std::unique_ptr<BpeTokenizer> cl100k_, qwen2_, llama3_json_, llama3_tiktoken_;
};

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  for (const json& s : read_json(kGolden + "corpus.json"))
    out.push_back(s.at("text").get<std::string>());
  return out;
}

// Every sample's ids must equal the golden ids, and decode back to the exact text.
void check_golden(const BpeTokenizer& tok, const std::string& golden_file) {
  const std::vector<std::string> texts = corpus();
  const json golden = read_json(kGolden + golden_file);
  EXPECT_EQ(golden.at("pattern").get<std::string>(), tok.pattern()) << golden_file;
  size_t samples = 0, tokens = 0, matched_samples = 0, matched_tokens = 0;
  for (const json& s : golden.at("samples")) {
    const size_t i = s.at("sample").get<size_t>();
    ASSERT_LT(i, texts.size());
    const std::vector<int64_t> want = s.at("ids").get<std::vector<int64_t>>();
    const std::vector<int64_t> got = tok.encode(texts[i]);
    ++samples;
    tokens += want.size();
    if (got == want) {
      ++matched_samples;
      matched_tokens += want.size();
    } else {
      size_t k = 0;
      while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
      ADD_FAILURE() << golden_file << " sample " << i << ": first difference at token " << k
                    << " (got " << (k < got.size() ? std::to_string(got[k]) : "end") << ", want "
                    << (k < want.size() ? std::to_string(want[k]) : "end") << "); text starts "
                    << texts[i].substr(0, 60);
    }
    EXPECT_EQ(tok.decode(want, false), texts[i]) << golden_file << " sample " << i;
  }
  EXPECT_EQ(samples, texts.size());
  EXPECT_EQ(tokens, golden.at("tokens").get<size_t>());
  std::printf("[ golden   ] %s (%s, %s): %zu/%zu samples, %zu/%zu tokens match\n",
              golden_file.c_str(), tok.source_format().c_str(),
              tok.pattern() == kQwen2Pattern ? "qwen2 regex" : "llama3 regex", matched_samples,
              samples, matched_tokens, tokens);
}

TEST(BpeGolden, Cl100kTiktokenFile) {
  auto& v = Vocabularies::get();
  EXPECT_EQ(v.cl100k().source_format(), "tiktoken");
  check_golden(v.cl100k(), "cl100k_base.golden.json");
}

TEST(BpeGolden, Cl100kRanksWithQwen2Regex) {
  auto& v = Vocabularies::get();
  EXPECT_EQ(v.cl100k_qwen2().pattern(), kQwen2Pattern);
  check_golden(v.cl100k_qwen2(), "cl100k_qwen2.golden.json");
}

TEST(BpeGolden, Llama3TokenizerJson) {
  auto& v = Vocabularies::get();
  EXPECT_EQ(v.llama3_json().source_format(), "tokenizer.json");
  check_golden(v.llama3_json(), "llama3.golden.json");
}

TEST(BpeGolden, Llama3TiktokenFile) {
  auto& v = Vocabularies::get();
  EXPECT_EQ(v.llama3_tiktoken().source_format(), "tiktoken");
  check_golden(v.llama3_tiktoken(), "llama3.golden.json");
}

TEST(BpeGolden, Llama3FormsAgree) {
  auto& v = Vocabularies::get();
  const BpeTokenizer& a = v.llama3_json();
  const BpeTokenizer& b = v.llama3_tiktoken();
  EXPECT_EQ(a.vocab_size(), 128256);
  EXPECT_EQ(b.vocab_size(), 128256);
  for (const char* name :
       {"<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|reserved_special_token_247|>"})
    EXPECT_EQ(a.special_id(name), b.special_id(name)) << name;
  EXPECT_EQ(a.bos_id(), 128000);
  EXPECT_EQ(a.eos_id(), 128009);
  EXPECT_EQ(b.bos_id(), 128000);
  EXPECT_EQ(b.eos_id(), 128009);
  EXPECT_EQ(a.pad_id(), 128009);  // no pad_token: eos, as HF's `pad_token = eos_token`
}

// ---- behaviour on the real vocabularies --------------------------------------------------------

TEST(Bpe, SpecialTextIsNeverASpecialToken) {
  auto& v = Vocabularies::get();
  const BpeTokenizer& tok = v.cl100k();
  const std::string text = "a<|endoftext|>b";
  const std::vector<int64_t> ids = tok.encode(text);
  for (int64_t id : ids) EXPECT_FALSE(tok.is_special(id));
  EXPECT_EQ(tok.decode(ids), text);

  const std::vector<int64_t> allowed = tok.encode_allowing(text, {"<|endoftext|>"});
  EXPECT_EQ(allowed, testing::cat({tok.encode("a"), {100257}, tok.encode("b")}));
  EXPECT_EQ(tok.decode(allowed, /*skip_special=*/true), "ab");
  EXPECT_EQ(tok.decode(allowed, /*skip_special=*/false), text);
  // Only the named specials are recognised.
  EXPECT_EQ(tok.encode_allowing("<|fim_prefix|>x<|endoftext|>", {"<|endoftext|>"}),
            testing::cat({tok.encode("<|fim_prefix|>x"), {100257}}));
  expect_error([&] { tok.encode_allowing("x", {"<|nope|>"}); }, {"<|nope|>"});
}

TEST(Bpe, SpecialsAndIds) {
  auto& v = Vocabularies::get();
  const BpeTokenizer& tok = v.cl100k();
  EXPECT_EQ(tok.vocab_size(), 100277);
  EXPECT_TRUE(tok.has_special("<|endofprompt|>"));
  EXPECT_EQ(tok.special_id("<|endofprompt|>"), 100276);
  EXPECT_TRUE(tok.is_special(100257));
  EXPECT_FALSE(tok.is_special(100));
  EXPECT_EQ(tok.eos_id(), 100257);
  EXPECT_EQ(tok.bos_id(), -1);
  expect_error([&] { tok.special_id("<|eot_id|>"); }, {"<|eot_id|>"});
  expect_error([&] { tok.decode({100261}); }, {"100261", "not assigned"});  // a gap in the ids
  expect_error([&] { tok.decode({100277}); }, {"100277", "outside"});
  expect_error([&] { tok.decode({-1}); }, {"-1"});
}

TEST(Bpe, DecodeJoinsBytesAcrossTokens) {
  auto& v = Vocabularies::get();
  const BpeTokenizer& tok = v.cl100k();
  const std::string text = "\xF0\x9F\xA6\x99 llama";  // the llama emoji is several tokens
  const std::vector<int64_t> ids = tok.encode(text);
  ASSERT_GT(ids.size(), 2u);
  std::string pieces;
  for (int64_t id : ids) pieces += tok.decode({id});
  EXPECT_EQ(pieces, text);  // each token alone is a raw fragment, not U+FFFD
  EXPECT_NE(tok.decode({ids[0]}), text.substr(0, 4));
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(Bpe, InvalidUtf8RoundTrips) {
  auto& v = Vocabularies::get();
  for (const BpeTokenizer* tok : {&v.cl100k(), &v.llama3_json()}) {
    for (const std::string& text :
         {std::string("ab\xFF\xFE"
                      "cd"),
          std::string("\xC3"), std::string("x \xE4\xBD end\x80"), std::string("a\0b", 3)}) {
      const std::vector<int64_t> ids = tok->encode(text);
      EXPECT_EQ(tok->decode(ids), text);
      std::string joined;
      for (const std::string& p : tok->pretokenize(text)) joined += p;
      EXPECT_EQ(joined, text);
    }
  }
}

TEST(Bpe, PreTokenizerRegexes) {
  auto& v = Vocabularies::get();
  using V = std::vector<std::string>;
  const BpeTokenizer& llama = v.cl100k();
  const BpeTokenizer& qwen = v.cl100k_qwen2();
  EXPECT_EQ(llama.pretokenize("1234567"), (V{"123", "456", "7"}));
  EXPECT_EQ(qwen.pretokenize("1234567"), (V{"1", "2", "3", "4", "5", "6", "7"}));
  EXPECT_EQ(llama.pretokenize("DON'T we'Ll"), (V{"DON", "'T", " we", "'Ll"}));
  EXPECT_EQ(llama.pretokenize("a  \r\n\r\n  b"), (V{"a", "  \r\n\r\n", " ", " b"}));
  EXPECT_EQ(llama.pretokenize("x   \n"), (V{"x", "   \n"}));
  EXPECT_EQ(llama.pretokenize("hi!!\n\nyo"), (V{"hi", "!!\n\n", "yo"}));
  // (?i) folds like Rust regex: U+017F (long s) matches 's.
  EXPECT_EQ(llama.pretokenize("it'\xC5\xBF"), (V{"it", "'\xC5\xBF"}));
  // \s is Unicode White_Space: U+0085 is a space, U+180E is not (PCRE2 alone would say it is).
  EXPECT_EQ(llama.pretokenize("a \xC2\x85 b"), (V{"a", " \xC2\x85", " b"}));
  EXPECT_EQ(llama.pretokenize("word \xE1\xA0\x8Eword"), (V{"word", " \xE1\xA0\x8E", "word"}));
}

TEST(Bpe, LongRunsStayFastAndExact) {
  auto& v = Vocabularies::get();
  const BpeTokenizer& tok = v.llama3_json();
  for (const std::string& text : {std::string(200000, ' ') + "x", std::string(100000, 'a'),
                                  std::string(50000, '7'), std::string(30000, '\n')}) {
    const std::vector<int64_t> ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text);
    EXPECT_LT(ids.size(), text.size());
  }
}

TEST(Bpe, ConcurrentEncodersAgree) {
  auto& v = Vocabularies::get();
  const BpeTokenizer& tok = v.llama3_tiktoken();
  const std::vector<std::string> texts = corpus();
  std::vector<std::vector<int64_t>> want;
  for (const std::string& t : texts) want.push_back(tok.encode(t));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (size_t i = (t * 7) % texts.size(), n = 0; n < texts.size();
             ++n, i = (i + 1) % texts.size())
          if (tok.encode(texts[i]) != want[i]) ++mismatches;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Bpe, FingerprintTracksVocabularyAndRegex) {
  auto& v = Vocabularies::get();
  EXPECT_EQ(v.cl100k().fingerprint(), BpeTokenizer::load(v.cl100k_dir())->fingerprint());
  EXPECT_NE(v.cl100k().fingerprint(), v.cl100k_qwen2().fingerprint());
  EXPECT_NE(v.cl100k().fingerprint(), v.llama3_tiktoken().fingerprint());
  EXPECT_EQ(v.cl100k().fingerprint().size(), 16u);
}

TEST(Bpe, LoadTokenizerDispatches) {
  auto& v = Vocabularies::get();
  for (const std::string& dir : {v.cl100k_dir(), v.llama3_json_dir(), v.llama3_tiktoken_dir()}) {
    std::unique_ptr<Tokenizer> tok = load_tokenizer(dir);
    EXPECT_NE(dynamic_cast<BpeTokenizer*>(tok.get()), nullptr) << dir;
    EXPECT_EQ(tok->encode("Hello world"), (std::vector<int64_t>{9906, 1917}));  // same in both
  }
  // A sentencepiece directory still loads as sentencepiece.
  EXPECT_EQ(dynamic_cast<const BpeTokenizer*>(&testing::tiny_tokenizer()), nullptr);
  TempDir empty("empty");
  EXPECT_EQ(try_load_bpe_tokenizer(empty.path()), nullptr);
  expect_error([&] { BpeTokenizer::load(empty.path()); }, {empty.path(), "no byte-level BPE"});
  expect_error([&] { load_tokenizer(empty.path() + "/missing"); }, {"missing"});
}

// encode_allowing's default (tokenizer.h) serves the sentencepiece tokenizer.
TEST(Bpe, SentencepieceEncodeAllowing) {
  const Tokenizer& tok = testing::tiny_tokenizer();
  const int64_t eot = tok.special_id("<|eot_id|>");
  EXPECT_EQ(tok.encode_allowing("hello<|eot_id|>world", {"<|eot_id|>"}),
            testing::cat({tok.encode("hello"), {eot}, tok.encode("world")}));
  EXPECT_EQ(tok.encode_allowing("<|eot_id|><|eot_id|>", {"<|eot_id|>"}),
            (std::vector<int64_t>{eot, eot}));
  EXPECT_EQ(tok.encode_allowing("hello<|eot_id|>", {}), tok.encode("hello<|eot_id|>"));
}

// ---- small hand-built tokenizers ---------------------------------------------------------------

// GPT-2's bytes_to_unicode for the printable ASCII used below is the identity, and ' ' is 'Ġ'.
const std::string kG = "\xC4\xA0";  // Ġ

// Byte-level vocabulary: all 256 single bytes (ids 0..255 in byte order) + `extra` tokens.
json byte_vocab(const std::vector<std::string>& extra) {
  json vocab = json::object();
  int next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const char32_t cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s = std::string(1, static_cast<char>(cp));
    } else {
      s = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    vocab[s] = b;
  }
  int id = 256;
  for (const std::string& t : extra) vocab[t] = id++;
  return vocab;
}

json tokenizer_json(const json& vocab, const json& merges, bool ignore_merges,
                    const std::string& regex, const json& added = json::array()) {
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Split"},
                                            {"pattern", {{"Regex", regex}}},
                                            {"behavior", "Isolated"},
                                            {"invert", false}},
                                           {{"type", "ByteLevel"},
                                            {"add_prefix_space", false},
                                            {"trim_offsets", true},
                                            {"use_regex", false}}})}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"ignore_merges", ignore_merges},
            {"vocab", vocab},
            {"merges", merges}}}};
}

TEST(BpeSmall, IgnoreMergesDecidesUnreachableTokens) {
  // "abc" is in the vocabulary but no merge builds it ("ab" + "c" is not listed).
  const json vocab = byte_vocab({"ab", "bc", "abc", kG + "a"});
  const json merges = json::array({"b c", "a b", kG + " a"});
  for (bool ignore : {false, true}) {
    TempDir dir("small");
    dir.write("tokenizer.json", tokenizer_json(vocab, merges, ignore, kQwen2Pattern).dump());
    auto tok = BpeTokenizer::load(dir.path());
    // Without ignore_merges, "bc" (merge 0) wins over "ab" (merge 1): a + bc.
    const std::vector<int64_t> abc =
        ignore ? std::vector<int64_t>{258} : std::vector<int64_t>{'a', 257};
    EXPECT_EQ(tok->encode("abc"), abc) << ignore;
    EXPECT_EQ(tok->encode("abcd"), (std::vector<int64_t>{'a', 257, 'd'})) << ignore;
    EXPECT_EQ(tok->encode(" a"), (std::vector<int64_t>{259}));
    EXPECT_EQ(tok->decode(tok->encode("x abc abcd")), "x abc abcd");
    EXPECT_EQ(tok->vocab_size(), 260);
  }
}

TEST(BpeSmall, MergeTiesGoLeftmostAndLongPiecesAgree) {
  // "aa" then "aaaa": a run of a's pairs up from the left.
  const json vocab = byte_vocab({"aa", "aaaa"});
  TempDir dir("ties");
  dir.write("tokenizer.json",
            tokenizer_json(vocab, json::array({"a a", "aa aa"}), false, kLlama3Pattern).dump());
  auto tok = BpeTokenizer::load(dir.path());
  EXPECT_EQ(tok->encode("aaa"), (std::vector<int64_t>{256, 'a'}));
  EXPECT_EQ(tok->encode("aaaaaaa"), (std::vector<int64_t>{257, 256, 'a'}));
  // The same rule on pieces long enough to take the heap path.
  for (size_t n : {47, 48, 49, 50, 101, 1003}) {
    std::vector<int64_t> want(n / 4, 257);
    if (n % 4 >= 2) want.push_back(256);
    if (n % 2) want.push_back('a');
    EXPECT_EQ(tok->encode(std::string(n, 'a')), want) << n;
  }
}

TEST(BpeSmall, ArrayMergesAddedTokensAndConfig) {
  const json vocab = byte_vocab({"hi", kG + "hi"});
  const json added = json::array({{{"id", 258}, {"content", "<|end|>"}, {"special", true}},
                                  {{"id", 259}, {"content", "<tool>"}, {"special", false}}});
  TempDir dir("added");
  dir.write("tokenizer.json",
            tokenizer_json(vocab, json::array({json::array({"h", "i"}), json::array({kG, "hi"})}),
                           false, kLlama3Pattern, added)
                .dump());
  dir.write(
      "tokenizer_config.json",
      json{{"eos_token", {{"content", "<|end|>"}}}, {"pad_token", "<tool>"}, {"bos_token", nullptr}}
          .dump());
  auto tok = BpeTokenizer::load(dir.path());
  EXPECT_EQ(tok->encode("hi hi"), (std::vector<int64_t>{256, 257}));
  // A non-special added token is matched inside text (HF does); a special one is not.
  EXPECT_EQ(tok->encode("hi<tool>hi"), (std::vector<int64_t>{256, 259, 256}));
  const std::vector<int64_t> end_as_text = tok->encode("<|end|>");
  EXPECT_EQ(std::count(end_as_text.begin(), end_as_text.end(), 258), 0);
  EXPECT_EQ(tok->encode_allowing("hi<|end|>", {"<|end|>"}), (std::vector<int64_t>{256, 258}));
  EXPECT_EQ(tok->decode({256, 259, 258}, true), "hi<tool>");
  EXPECT_EQ(tok->decode({256, 259, 258}, false), "hi<tool><|end|>");
  EXPECT_EQ(tok->eos_id(), 258);
  EXPECT_EQ(tok->pad_id(), 259);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_FALSE(tok->is_special(259));
  EXPECT_TRUE(tok->is_special(258));
}

TEST(BpeSmall, VocabJsonMergesTxtQwen2) {
  TempDir dir("qwen2");
  dir.write("vocab.json", byte_vocab({"12", kG + "x"}).dump());
  dir.write("merges.txt", "#version: 0.2\n1 2\n" + kG + " x\n");
  dir.write(
      "tokenizer_config.json",
      json{{"tokenizer_class", "Qwen2Tokenizer"},
           {"added_tokens_decoder",
            added_decoder({{258, "<|endoftext|>"}, {259, "<|im_start|>"}, {260, "<|im_end|>"}})},
           {"eos_token", "<|im_end|>"},
           {"pad_token", "<|endoftext|>"}}
          .dump());
  std::unique_ptr<Tokenizer> any = load_tokenizer(dir.path());
  auto* tok = dynamic_cast<BpeTokenizer*>(any.get());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->source_format(), "vocab.json+merges.txt");
  EXPECT_EQ(tok->pattern(), kQwen2Pattern);
  EXPECT_EQ(tok->normalizer(), "NFC");
  // Qwen2 splits digits one by one, so "12" never merges inside a number.
  EXPECT_EQ(tok->encode("12 x"), (std::vector<int64_t>{'1', '2', 257}));
  EXPECT_EQ(tok->eos_id(), 260);
  EXPECT_EQ(tok->pad_id(), 258);
  EXPECT_EQ(tok->vocab_size(), 261);
  EXPECT_EQ(tok->decode({'1', 260, 257}, false), "1<|im_end|> x");
}

TEST(BpeSmall, TiktokenConfigPicksTheRegex) {
  TempDir dir("tkcfg");
  std::string model;
  for (int b = 0; b < 256; ++b)
    model += base64(std::string(1, static_cast<char>(b))) + " " + std::to_string(b) + "\n";
  model += base64("12") + " 256\n" + base64("123") + " 257\n";
  dir.write("tokenizer.model", model);
  {
    auto tok = BpeTokenizer::load(dir.path());  // no config: Llama-3 regex, no specials
    EXPECT_EQ(tok->pattern(), kLlama3Pattern);
    EXPECT_EQ(tok->encode("1234"), (std::vector<int64_t>{257, '4'}));
    EXPECT_EQ(tok->vocab_size(), 258);
  }
  dir.write("tokenizer_config.json", json{{"pat_str", "\\p{N}{1,2}|\\D+"}}.dump());
  {
    auto tok = BpeTokenizer::load(dir.path());
    EXPECT_EQ(tok->encode("1234x"), (std::vector<int64_t>{256, '3', '4', 'x'}));
  }
}

TEST(BpeSmall, BadFilesAreClearErrors) {
  {
    TempDir dir("bad1");
    dir.write("tokenizer.model", "AAAA 0\n!!notbase64 1\n");
    expect_error([&] { BpeTokenizer::load(dir.path()); }, {"tokenizer.model:2", "base64"});
  }
  {
    TempDir dir("bad2");
    dir.write("tokenizer.json",
              tokenizer_json(byte_vocab({}), json::array({"a zz"}), false, kLlama3Pattern).dump());
    expect_error([&] { BpeTokenizer::load(dir.path()); },
                 {"tokenizer.json", "merge 1", "not in the vocabulary"});
  }
  {
    TempDir dir("bad3");
    json tj = tokenizer_json(byte_vocab({}), json::array(), false, kLlama3Pattern);
    tj["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Digits"}});
    dir.write("tokenizer.json", tj.dump());
    expect_error([&] { BpeTokenizer::load(dir.path()); },
                 {"pre-tokenizer 'Digits'", "not supported"});
  }
  {
    TempDir dir("bad4");
    dir.write("tokenizer.json",
              tokenizer_json(byte_vocab({}), json::array(), false, "(unclosed").dump());
    expect_error([&] { BpeTokenizer::load(dir.path()); }, {"regex", "(unclosed"});
  }
  {
    // Llama-2 style: tokenizer.json that is not byte-level, without a sentencepiece model.
    TempDir dir("bad5");
    dir.write("tokenizer.json", json{{"model", {{"type", "Unigram"}}}}.dump());
    expect_error([&] { load_tokenizer(dir.path()); }, {"not a byte-level BPE"});
  }
  {
    // A vocabulary without some byte can still encode text that does not need it.
    TempDir dir("bad6");
    dir.write("tokenizer.model", base64("a") + " 0\n" + base64("b") + " 1\n");
    auto tok = BpeTokenizer::load(dir.path());
    EXPECT_EQ(tok->encode("ab"), (std::vector<int64_t>{0, 1}));
    expect_error([&] { tok->encode("abc"); }, {"0x63"});
  }
}

}  // namespace
}  // namespace ftrun::data
