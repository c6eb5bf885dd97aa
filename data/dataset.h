// Dataset readers: JSON array (.json) or JSON Lines (.jsonl) files whose records are
//   alpaca:        {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
//   messages:      {"messages": [{"role": "system|user|assistant", "content": "..."}]}
//   pre-tokenized: {"input_ids": [int...], "labels": [int...]}  (same length; -100 = no loss)
// The form is detected per record. A record with a missing or wrong-typed field is an error
// naming file:line (JSONL) or file[index] (JSON array) and the field; an empty file is an error.
// Alpaca's user turn is instruction + "\n" + input (either alone when the other is empty);
// optional fields may be null. Blank JSONL lines are skipped (line numbers still count them),
// and a .json file that does not open with '[' is read as JSON Lines, as HF datasets does.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ftrun::data {

struct Message {
  std::string role;  // system, user, assistant
  std::string content;
};

struct Example {
  std::string where;  // "path:LINE" or "path[INDEX]", for error messages
  std::vector<Message> messages;           // chat records (alpaca is converted)
  std::vector<int64_t> input_ids, labels;  // pre-tokenized records (messages empty)
  bool pretokenized() const { return messages.empty(); }
};

std::vector<Example> read_dataset(const std::string& path);

}  // namespace ftrun::data
