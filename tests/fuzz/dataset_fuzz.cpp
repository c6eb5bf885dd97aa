// Fuzz target `dataset`: data records of every form (alpaca, messages, sharegpt, pre-tokenized;
// data/dataset.cpp read_dataset). Input: the file's bytes, read once as .jsonl and once as .json
// (a JSON array, or JSON Lines when it does not open with '['). Outcome: the .json reading's
// (a JSON array read as .jsonl is rightly an error, so that reading only has to end cleanly).
#include "data/dataset.h"
#include "tests/fuzz/fuzz_util.h"

FTRUN_FUZZ_TARGET(dataset) {
  std::vector<std::string> outcomes;
  for (const char* name : {"train.jsonl", "train.json"}) {
    const auto path = ftrun::fuzz::scratch_dir() / name;
    ftrun::fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
    outcomes.push_back(ftrun::fuzz::outcome([&] {
      for (const auto& ex : ftrun::data::read_dataset(path.string())) {
        // What the rest of data/ relies on: a location for errors, and pre-tokenized rows of
        // equal length (dataset.h).
        if (ex.where.empty()) std::abort();
        if (ex.pretokenized() && ex.input_ids.size() != ex.labels.size()) std::abort();
      }
    }));
  }
  return outcomes[1];
}
