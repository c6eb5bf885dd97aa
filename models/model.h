// The causal-LM interface the rest of ftrun sees, and loading/saving in HF's on-disk form.
//
// Parameter names (named_parameters()) are exactly the HF checkpoint names
// ("model.layers.0.self_attn.q_proj.weight"), so loading and saving are a name-for-name copy
// and adapters can be addressed by HF module path.
#pragma once
#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "models/linear.h"

namespace ftrun::models {

class CausalLM : public torch::nn::Module {
 public:
  // input_ids [B, T] int64; attention_mask [B, T] (1 = token, 0 = padding) or undefined.
  // Returns logits [B, T, vocab] in float32.
  virtual at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) = 0;
  virtual const ModelConfig& config() const = 0;
  // Every Linear with its HF module path ("model.layers.0.mlp.down_proj").
  std::vector<std::pair<std::string, Linear>> linears();
  // Names of the model's own parameters (what save_pretrained writes), recorded when the
  // model is built so that adapter parameters added later are told apart.
  const std::vector<std::string>& base_parameter_names() const { return base_names_; }
  void record_base_parameters();

 private:
  std::vector<std::string> base_names_;
};

// A model of the family named by config.model_type with randomly initialised weights
// (normal(0, initializer_range) like HF's _init_weights; seeded by the caller via torch).
std::shared_ptr<CausalLM> build_model(const ModelConfig& config);

// config.json + safetensors from dir; every checkpoint tensor must match a parameter by name
// and shape (tied lm_head may be absent); missing or unexpected names are an error listing
// them. Weights are converted to `dtype`.
std::shared_ptr<CausalLM> load_pretrained(const std::string& dir,
                                          at::ScalarType dtype = at::kFloat);
// Loads only the weights into an existing model (same rules).
void load_weights(CausalLM& model, const std::string& dir);

// Writes config.json + model.safetensors (sharded with an index past max_shard_bytes).
void save_pretrained(CausalLM& model, const std::string& dir,
                     uint64_t max_shard_bytes = 5'000'000'000ull);

// Cross-entropy of logits[:, :-1] against labels[:, 1:] over positions whose label is not
// -100 (HF's causal shift). Returns the SUM over those tokens; count receives their number,
// so callers can average over all label tokens of an accumulated batch.
at::Tensor causal_lm_loss_sum(const at::Tensor& logits, const at::Tensor& labels,
                              int64_t* count = nullptr);

}  // namespace ftrun::models
