// The GLM family's chat templates, glm4 and chatglm3 (THUDM's formats and their fine-tune
// demos' label rules; made by make_template()), and the GLM-4 demo's sample and evaluation rows.
//
// glm4 is the GLM-4 fine-tune demo, exactly (shared/reference/glm4-demo.md 3.3-3.5):
//   render text  [gMASK]<sop> { [tools block] [<|role|> metadata "\n" content] }*
//   sample       combine=true : whole conversation, loss after the LAST <|assistant|>
//                combine=false: message by message, every assistant message marked
//                then <|user|> (151336) appended, mask shifted right by one, cut to
//                max_input_length + max_output_length + 1
// Specials are looked up by name (<|user|> etc.), so a GLM-4 tokenizer gives the demo's ids.
// Deliberate differences from the demo (glm4-demo.md 10):
//   B1  only messages that carry `tools` get a tools block (no null tools iterated), so
//       combine=true works with tool data;
//   B2  evaluation prompts end before the last assistant turn, with <|assistant|> appended
//       (the demo's prompt holds the gold answer and ends with [gMASK]);
//   B10 kept as the demo does it: one right cut at in + out + 1, which can remove the closing
//       <|user|>; the two limits are not applied separately.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/chat_template.h"

namespace ftrun::data {

// The GLM-4 demo's training sample (glm4-demo.md 3.4). max_in + max_out <= 0: no cut.
// Throws when combine=true and the conversation has no assistant turn (the demo's ValueError).
Sample glm4_demo_sample(const std::vector<Message>& messages, const Tokenizer& tok, bool combine,
                        int64_t max_in, int64_t max_out);

// The token ids of the GLM-4 rendering ([gMASK]<sop> + messages), no generation prompt.
std::vector<int64_t> glm4_render_ids(const std::vector<Message>& messages, const Tokenizer& tok);

struct EvalRow {
  std::vector<int64_t> prompt;  // what generation starts from; ends with <|assistant|>
  std::vector<int64_t> target;  // the gold reply: metadata "\n" content <|user|>
};

// B2 fixed: prompt = render(messages before the LAST assistant message) cut to max_in, then
// <|assistant|>; target = that message's "{metadata}\n{content}" + <|user|>, cut to max_out
// (<= 0: no cut). Throws when there is no assistant message.
EvalRow eval_prompt_and_target(const std::vector<Message>& messages, const Tokenizer& tok,
                               int64_t max_in, int64_t max_out);

// The demo's evaluation rows for one conversation: combine=false gives one row per assistant
// message, walking while the context is shorter than max_in (glm4-demo.md 3.5, no bug there);
// combine=true gives the single B2-fixed row above.
std::vector<EvalRow> glm4_eval_rows(const std::vector<Message>& messages, const Tokenizer& tok,
                                    bool combine, int64_t max_in, int64_t max_out);

}  // namespace ftrun::data
