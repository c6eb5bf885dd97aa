// The sentencepiece tokenizer against an independent implementation: Debian's Python
// sentencepiece package encodes the same texts with the same model file, and ftrun's ids must
// equal its ids for every line of the shipped corpus and a set of hard cases (CJK, emoji via
// byte fallback, whitespace runs, digits, special-token text that must stay text).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"

namespace fs = std::filesystem;

TEST(SentencePieceGolden, IdsEqualPythonSentencepiece) {
  auto dir = fs::temp_directory_path() / ("ftrun_sp_golden_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  ftrun::data::train_tokenizer(FTRUN_SOURCE_DIR "/examples/tiny/tokenizer_corpus.txt", dir.string(), 400,
                               {"<|begin_of_text|>", "<|eot_id|>"});
  std::vector<std::string> texts;
  std::ifstream corpus(FTRUN_SOURCE_DIR "/examples/tiny/tokenizer_corpus.txt");
  for (std::string line; std::getline(corpus, line);) texts.push_back(line);
  for (const char* t : {"你好，世界！", "emoji 🙂🚀 and ümlaut", "  leading and trailing  ", "tabs\tand\nnewlines\r\n",
                        "1234567890 3.14159", "<|eot_id|> stays text", "", "a", "DON'T shout"})
    texts.push_back(t);
  std::ofstream(dir / "texts.json") << nlohmann::json(texts).dump();
  // The independent side: python3-sentencepiece (Debian), reading the same model file.
  std::string script =
      "import json, sys, sentencepiece as spm\n"
      "sp = spm.SentencePieceProcessor(model_file=sys.argv[1])\n"
      "texts = json.load(open(sys.argv[2], encoding='utf-8'))\n"
      "json.dump([sp.encode(t) for t in texts], open(sys.argv[3], 'w'))\n";
  std::ofstream(dir / "golden.py") << script;
  std::string py = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  int rc = std::system((py + " " + (dir / "golden.py").string() + " " + (dir / "tokenizer.model").string() + " " +
                        (dir / "texts.json").string() + " " + (dir / "golden.json").string())
                           .c_str());
  ASSERT_EQ(rc, 0) << "python3-sentencepiece is required (apt-get install python3-sentencepiece)";
  nlohmann::json golden;
  std::ifstream(dir / "golden.json") >> golden;
  ASSERT_EQ(golden.size(), texts.size());
  auto tok = ftrun::data::load_tokenizer(dir.string());
  size_t tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = tok->encode(texts[i]);
    EXPECT_EQ(ids, golden[i].get<std::vector<int64_t>>()) << "text " << i << ": " << texts[i];
    EXPECT_EQ(tok->decode(ids, false), texts[i]) << "text " << i;
    tokens += ids.size();
  }
  EXPECT_GT(tokens, 1000u);
  fs::remove_all(dir);
}
