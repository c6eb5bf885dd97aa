// Chat templates: conversation -> token ids + labels, and generation prompts.
//
// Loss convention (LLaMA-Factory's, outside GLM-4-demo mode): labels are -100 everywhere but
// the assistant's content and the end token that closes each assistant turn. Labels are NOT
// pre-shifted: label i is the target for position i, and the model shifts (HF convention).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/tokenizer.h"

namespace ftrun::data {

struct Sample {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // same length; -100 = no loss
};

class ChatTemplate {
 public:
  virtual ~ChatTemplate() = default;
  virtual std::string name() const = 0;
  virtual Sample render(const std::vector<Message>& messages, const Tokenizer& tok) const = 0;
  // Tokens that ask the model for the next assistant turn after `messages`.
  virtual std::vector<int64_t> prompt(const std::vector<Message>& messages,
                                      const Tokenizer& tok) const = 0;
  virtual std::vector<int64_t> stop_ids(const Tokenizer& tok) const = 0;
};

// "llama3" for now; an unknown name is an error listing the known ones.
std::unique_ptr<ChatTemplate> make_template(const std::string& name);

// Renders (or takes, when pre-tokenized) one example and cuts it to its first max_length
// tokens (max_length <= 0: no cut). Errors name ex.where: a conversation without an assistant
// turn, pre-tokenized ids outside the vocabulary (labels may also be -100).
Sample encode_example(const Example& ex, const ChatTemplate& tmpl, const Tokenizer& tok,
                      int64_t max_length);

}  // namespace ftrun::data
