// Dataset readers: JSON array (.json) or JSON Lines (.jsonl) files whose records are
//   alpaca:        {"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}
//   messages:      {"messages": [{"role": "system|user|assistant|observation", "content": "...",
//                                 "tools"?: [...] (system only), "metadata"?: "..."}]}
//                  (the GLM-4 demo's format; OpenAI's `messages` is the subset without
//                  observation/tools/metadata)
//   sharegpt:      {"conversations": [{"from": "human|gpt|function_call|observation|system",
//                                      "value": "..."}], "system"?: "...", "tools"?: "JSON"}
//   pre-tokenized: {"input_ids": [int...], "labels": [int...]}  (same length; -100 = no loss)
// The form is detected per record. A record with a missing or wrong-typed field is an error
// naming file:line (JSONL) or file[index] (JSON array) and the field; an empty file is an error.
// Alpaca's user turn is instruction + "\n" + input (either alone when the other is empty);
// optional fields may be null. Blank JSONL lines are skipped (line numbers still count them),
// and a .json file that does not open with '[' is read as JSON Lines, as HF datasets does.
//
// Records are parsed with nlohmann::ordered_json so that tool schemas keep the key order they
// were written in: GLM-4's template prints them as JSON, and the model saw them in that order.
// An optional key that is null counts as absent (HF datasets/Arrow write null for every key
// some other record has; treating those as present is the GLM-4 demo's bug B1/B11).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ftrun::data {

struct Message {
  std::string role;  // system, user, assistant, observation (a tool's result)
  std::string content;
  // GLM-4 / ChatGLM3: text written between the role token and the "\n" (e.g. a tool name).
  std::string metadata;
  // Tool definitions carried by a system message, as written (array; null = no `tools` key).
  // GLM-4 renders them into a <|system|> block, ChatGLM3 appends them to the system content.
  nlohmann::ordered_json tools;
  bool has_tools() const { return !tools.is_null(); }
};

struct Example {
  std::string where;  // "path:LINE" or "path[INDEX]", for error messages
  std::vector<Message> messages;           // chat records (alpaca is converted)
  std::vector<int64_t> input_ids, labels;  // pre-tokenized records (messages empty)
  bool pretokenized() const { return messages.empty(); }
};

std::vector<Example> read_dataset(const std::string& path);

}  // namespace ftrun::data
