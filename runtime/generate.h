// Inference: load a base model or a trained adapter directory, and greedy generation.
// (No KV cache yet: each new token recomputes the sequence, which is fine for the tiny
// demo; the cached path arrives with the generation issue.)
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "models/model.h"
#include "peft/strategy.h"

namespace ftrun::runtime {

struct Inference {
  std::shared_ptr<models::CausalLM> model;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<data::ChatTemplate> chat_template;
  std::unique_ptr<peft::Strategy> strategy;  // null for a plain model
  std::string base_dir;
};

// `path` is an HF model directory, or a PEFT adapter directory whose
// base_model_name_or_path (or `base_override`) names the base. The tokenizer comes from
// `path` when it holds one (ftrun copies it into every output), else from the base.
Inference load_for_inference(const std::string& path, const std::string& base_override = "",
                             const std::string& template_override = "");

// Greedy continuation of `prompt`; stops after a stop id (which is included) or max_new.
std::vector<int64_t> greedy_generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                                     int64_t max_new_tokens, const std::vector<int64_t>& stop_ids);

}  // namespace ftrun::runtime
