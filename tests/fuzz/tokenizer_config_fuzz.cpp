// Fuzz target `tokenizer_config`: tokenizer_config.json's token entries (data/added_tokens.cpp:
// read_tokenizer_json, parse_tokenizer_config, then the AddedTokens table built from them and
// bos/eos/pad resolved, as both file-backed tokenizers do). Input: the file's bytes.
#include <nlohmann/json.hpp>

#include "data/added_tokens.h"
#include "data/fingerprint.h"
#include "tests/fuzz/fuzz_util.h"

FTRUN_FUZZ_TARGET(tokenizer_config) {
  const auto path = ftrun::fuzz::scratch_dir() / "tokenizer_config.json";
  ftrun::fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  return ftrun::fuzz::outcome([&] {
    using namespace ftrun::data;
    const TokenizerConfig tc = parse_tokenizer_config(read_tokenizer_json(path), path.string());
    AddedTokens added(path.parent_path().string(), "");
    for (const auto& [id, tok] : tc.added) added.add(id, tok);
    // A small stand-in base vocabulary: "<unk>", "<s>", "</s>" are ids 0-2, as in sentencepiece.
    added.resolve(tc.names, path.string(),
                  [](const std::string& name) -> int64_t {
                    return name == "<unk>" ? 0 : name == "<s>" ? 1 : name == "</s>" ? 2 : -1;
                  },
                  "a vocabulary token");
    Fnv1a64 h;
    added.hash(h);
    for (const auto& [id, tok] : added.by_id())
      if (added.id(tok.content) < 0 || added.find(id) == nullptr) std::abort();
  });
}
