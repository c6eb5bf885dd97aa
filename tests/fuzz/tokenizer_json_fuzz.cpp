// Fuzz target `tokenizer_json`: an HF tokenizer.json, with an optional tokenizer_config.json
// beside it (data/bpe_formats.cpp + bpe_engine.cpp through try_load_bpe_tokenizer), then the
// loaded tokenizer encodes and decodes a fixed sample and the input's first bytes. Input:
// tokenizer.json, optionally followed by a line "//tokenizer_config.json" and that file.
#include <filesystem>

#include "data/bpe_tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

FTRUN_FUZZ_TARGET(tokenizer_json) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto parts = ftrun::fuzz::split(input, "\n//tokenizer_config.json\n");
  const auto dir = ftrun::fuzz::scratch_dir() / "tokenizer";
  std::filesystem::create_directories(dir);
  ftrun::fuzz::write_file(dir / "tokenizer.json", parts[0]);
  std::error_code ec;
  if (parts.size() > 1)
    ftrun::fuzz::write_file(dir / "tokenizer_config.json", parts[1]);
  else
    std::filesystem::remove(dir / "tokenizer_config.json", ec);
  return ftrun::fuzz::outcome([&] {
    const auto tok = ftrun::data::try_load_bpe_tokenizer(dir.string());
    if (!tok) throw std::runtime_error("not a byte-level BPE tokenizer");
    for (const std::string& text : {std::string("Hello, world! 123 \xe4\xbd\xa0\xe5\xa5\xbd\n\t  x"),
                                   std::string(input.substr(0, 256))}) {
      const auto ids = tok->encode(text);
      for (const int64_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();  // an id the model has no row for
      (void)tok->decode(ids, false);
      (void)tok->decode(ids, true);
    }
    // bos/eos/pad become input ids (chat templates insert them by id): rows of the embedding.
    for (const int64_t id : {tok->bos_id(), tok->eos_id()})
      if (id < -1 || id >= tok->vocab_size()) std::abort();  // -1 = none
    if (tok->pad_id() < 0 || tok->pad_id() >= tok->vocab_size()) std::abort();
    (void)tok->fingerprint();
  });
}
