// Tiny in-memory models for tests and benchmarks (see tiny.h).
#include "testing/tiny.h"

#include <torch/torch.h>

#include "models/config.h"
#include "models/model.h"

namespace ftrun::testing {

models::TinySpec tiny_spec(int64_t vocab_size, TinyShape shape, const std::string& model_type) {
  models::TinySpec s;
  s.model_type = model_type;
  s.vocab_size = vocab_size;
  s.hidden_size = shape.hidden_size;
  s.intermediate_size = shape.intermediate_size;
  s.num_attention_heads = shape.num_attention_heads;
  s.num_key_value_heads = shape.num_key_value_heads;
  return s;
}

models::ModelConfig tiny_model_config(const models::TinySpec& spec) {
  return models::parse_model_config(models::tiny_config(spec), "tiny");
}

std::shared_ptr<models::CausalLM> make_tiny_model(const TinyOptions& options) {
  if (options.seed) torch::manual_seed(*options.seed);
  auto model = models::build_model(tiny_model_config(options.spec));
  if (options.weight_std > 0) {
    torch::NoGradGuard ng;
    for (auto& p : model->named_parameters())
      if (p.key().find("norm") == std::string::npos) p.value().normal_(0, options.weight_std);
  }
  return model;
}

}  // namespace ftrun::testing
