// The tiny random models the unit tests and benchmarks build in memory: a TinySpec from a
// vocabulary size and four widths, and the seeded build, so every test that says "a 2-layer
// model of width 16, seed 7" writes it in one line and gets the same weights as before.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "models/tiny.h"

namespace ftrun::models {
class CausalLM;
struct ModelConfig;
}  // namespace ftrun::models

namespace ftrun::testing {

// The widths tests vary. The default is the smallest shape that still has grouped-query
// attention: hidden 16, MLP 24, 2 heads over 1 key/value head.
struct TinyShape {
  int64_t hidden_size = 16;
  int64_t intermediate_size = 24;
  int64_t num_attention_heads = 2;
  int64_t num_key_value_heads = 1;
};

// models::TinySpec with this vocabulary, shape and family (llama | qwen2 | chatglm3 | glm4);
// every other field keeps TinySpec's default (2 layers, 512 positions, no special ids).
models::TinySpec tiny_spec(int64_t vocab_size, TinyShape shape = {}, const std::string& model_type = "llama");

struct TinyOptions {
  models::TinySpec spec;
  // torch::manual_seed(*seed) right before the build, so the initial weights are reproducible;
  // unset: the global generator is left as it is.
  std::optional<uint64_t> seed;
  // > 0: after the build every parameter except the norms is redrawn from N(0, weight_std)
  // (under no_grad), giving sharper logits than HF's init and non-zero biases.
  double weight_std = 0;
};

// parse_model_config(tiny_config(spec)) under the name "tiny".
models::ModelConfig tiny_model_config(const models::TinySpec& spec);
// The built model, seeded as options say.
std::shared_ptr<models::CausalLM> make_tiny_model(const TinyOptions& options);

}  // namespace ftrun::testing
