// Chat templates: conversation -> token ids + labels, and generation prompts.
//
// Loss convention (LLaMA-Factory's, outside GLM-4-demo mode): labels are -100 everywhere but
// the assistant's content and the end token that closes each assistant turn. Labels are NOT
// pre-shifted: label i is the target for position i, and the model shifts (HF convention).
// The GLM family (glm4, chatglm3) follows THUDM's demos instead; see data/templates/glm.h.
//
// Templates, one file each in data/templates/: llama3, glm4 + chatglm3 (glm.cpp), qwen, bluelm.
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

// What the trainer knows about how a sample is cut and masked: the demo config's
// max_input_length / max_output_length / combine keys.
struct EncodeOptions {
  int64_t max_input_length = 0;   // both 0: no cut
  int64_t max_output_length = 0;
  bool combine = true;            // glm4 only: the GLM-4 demo's `combine` (glm4-demo.md 3.4)
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

  // Training sample under `opts` (before the cut). Default: render(); glm4 applies the demo's
  // combine rule here.
  virtual Sample render_for_training(const std::vector<Message>& messages, const Tokenizer& tok,
                                     const EncodeOptions& opts) const {
    (void)opts;
    return render(messages, tok);
  }
  // Length a training sample is cut to (<= 0: no cut). Default: input + output; the THUDM demos
  // (glm4, chatglm3) keep one more token, input + output + 1.
  virtual int64_t max_length(const EncodeOptions& opts) const {
    return opts.max_input_length + opts.max_output_length;
  }
  // Whether evaluation by generation takes its rows from the fine-tune demo the template follows
  // (glm4: glm4_eval_rows in data/templates/glm.h, one row per assistant message under
  // combine=false, the prompt cut the demo's way) instead of fitting prompt() into
  // max_input_length (data/prompt_fit.h). Default: no.
  virtual bool uses_demo_eval_rows() const { return false; }
};

// llama3, glm4, chatglm3, qwen, bluelm; an unknown name is an error listing the known ones.
std::unique_ptr<ChatTemplate> make_template(const std::string& name);

// The template a model uses by default, from config.json's model_type and its tokenizer:
// llama -> llama3, qwen2 -> qwen, chatglm -> glm4 when the tokenizer has `<sop>` (GLM-4) else
// chatglm3 (whose start token is `sop`), glm/glm4 (the -hf variant) -> glm4, bluelm -> bluelm;
// anything else is returned as is (so make_template names it in its error).
std::string template_for_model(const std::string& model_type, const Tokenizer& tok);

// Renders (or takes, when pre-tokenized) one example and cuts it to its first max_length
// tokens (max_length <= 0: no cut). Errors name ex.where: a conversation without an assistant
// turn, pre-tokenized ids outside the vocabulary (labels may also be -100).
Sample encode_example(const Example& ex, const ChatTemplate& tmpl, const Tokenizer& tok,
                      int64_t max_length);

// The trainer's entry point: like the above with the sample built by
// tmpl.render_for_training(opts) and cut to tmpl.max_length(opts). For glm4 this is exactly
// the GLM-4 demo's sample (glm4_demo_sample with opts.combine); for chatglm3 ChatGLM3's
// finetune_hf.py sample; for the others render() cut to input + output. Errors name ex.where.
Sample encode_example(const Example& ex, const ChatTemplate& tmpl, const Tokenizer& tok,
                      const EncodeOptions& opts);

}  // namespace ftrun::data
