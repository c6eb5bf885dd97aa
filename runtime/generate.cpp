// Loading for inference and greedy generation (see generate.h).
#include "runtime/generate.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>


namespace fs = std::filesystem;

namespace ftrun::runtime {

Inference load_for_inference(const std::string& path, const std::string& base_override,
                             const std::string& template_override) {
  Inference inf;
  bool is_adapter = fs::exists(fs::path(path) / "adapter_config.json");
  inf.base_dir = path;
  if (is_adapter) {
    std::ifstream in(fs::path(path) / "adapter_config.json");
    nlohmann::json j;
    in >> j;
    inf.base_dir = !base_override.empty() ? base_override : j.value("base_model_name_or_path", "");
    if (inf.base_dir.empty() || !fs::exists(fs::path(inf.base_dir) / "config.json"))
      throw std::runtime_error(path + "/adapter_config.json: base model '" + inf.base_dir +
                               "' not found (pass --base DIR to point at it)");
  } else if (!fs::exists(fs::path(path) / "config.json")) {
    throw std::runtime_error(path + ": neither a model directory (config.json) nor an adapter "
                                    "directory (adapter_config.json)");
  }
  inf.model = models::load_pretrained(inf.base_dir);
  if (is_adapter) {
    inf.strategy = peft::strategy_from_adapter_dir(path);
    inf.strategy->apply(*inf.model);
    inf.strategy->load(path);
  }
  inf.model->eval();
  bool own_tok = fs::exists(fs::path(path) / "tokenizer_config.json");
  inf.tokenizer = data::load_tokenizer(own_tok ? path : inf.base_dir);
  inf.chat_template = data::make_template(template_override.empty()
                                              ? data::template_for_model(inf.model->config().model_type, *inf.tokenizer)
                                              : template_override);
  return inf;
}

std::vector<int64_t> greedy_generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                                     int64_t max_new_tokens, const std::vector<int64_t>& stop_ids) {
  torch::NoGradGuard ng;
  model.eval();
  std::vector<int64_t> seq = prompt, out;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    auto ids = torch::tensor(seq, torch::kLong).view({1, -1});
    auto logits = model.forward(ids, at::Tensor());
    int64_t next = logits[0][-1].argmax().item<int64_t>();
    seq.push_back(next);
    out.push_back(next);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) break;
  }
  return out;
}

}  // namespace ftrun::runtime
