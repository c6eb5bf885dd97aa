// Fitting a conversation's generation prompt into a token budget: evaluation rows under
// max_input_length (templates other than glm4, whose rows follow the demo's own cut) and
// `ftrun chat`, whose history must leave room for the reply in the model's context.
//
// The rule, in order, stopping as soon as the prompt fits:
//  1. the prompt as the template renders it;
//  2. drop the oldest exchanges: from the first non-system message up to the next user
//     message, repeatedly, while a user message stays (system messages are always kept);
//  3. one message still too long: keep the template's head (everything before the first
//     user message's text, with the system messages; without them if even that is too long)
//     and the prompt's last tokens, so the question's end and the generation header survive.
#pragma once
#include <cstdint>
#include <vector>

#include "data/chat_template.h"

namespace ftrun::data {

struct FittedPrompt {
  std::vector<int64_t> ids;
  size_t dropped_messages = 0;  // by step 2
  bool cut = false;             // step 3 was needed
};

// max_tokens <= 0: no budget. The last message should be the user's (the one to answer).
FittedPrompt fit_prompt(const ChatTemplate& tmpl, const std::vector<Message>& messages, const Tokenizer& tok,
                        int64_t max_tokens);

}  // namespace ftrun::data
