// models/: owns everything about a checkpoint's model: config.json (config.h), the model-family
// registry (family.h, one entry per family in families/), the model classes (llama, chatglm),
// the LoRA-able Linear, safetensors I/O, the chunked LM-head loss and tiny-model making.
//
// The causal-LM interface the rest of ftrun sees, and loading/saving in HF's on-disk form.
//
// Parameter names (named_parameters()) are exactly the HF checkpoint names
// ("model.layers.0.self_attn.q_proj.weight"), so loading and saving are a name-for-name copy
// and adapters can be addressed by HF module path.
#pragma once
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/attention.h"
#include "models/config.h"
#include "models/linear.h"

namespace ftrun::models {

// Keys and values of the tokens a model has already seen, for incremental decoding. Per
// layer [batch, kv_heads, S, head_dim], keys after rotary embedding; S counts the prefix
// slots (prefix tuning) plus `length` token slots. Empty until the first forward_cached.
// Batched generation left-pads its prompts: padding slots stay in the cache, marked in
// `real`, and each row's positions count its real tokens only, so every row sees what it
// would see alone.
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;         // token slots cached (padding included)
  at::Tensor real;            // [batch, length] bool, false at padding; undefined while there is none
  at::Tensor next_position;   // [batch] int64: each row's next position; undefined = `length` for all
};

// What a forward_cached step needs to know about its new tokens (the families share it):
// positions [B, T] int64 (each row's real tokens numbered on from the cache; padding 0),
// allowed [B, 1, T, length + T] bool (new token i may attend cached or new token slot j: a
// real slot at or before it; prefix-tuning slots are not included) and query_real [B, T]
// bool. advance_cache() computes them and records the new slots in `cache` (length, real,
// next_position). attention_mask [B, T] (1 = token, 0 = padding) may be undefined (all real).
struct CachedStep {
  at::Tensor positions, allowed, query_real;
  int64_t past = 0;  // token slots cached before this step
};
CachedStep advance_cache(KVCache& cache, const at::Tensor& attention_mask, int64_t batch, int64_t new_tokens,
                         const c10::Device& device);

// Packed rows (data/packing.h, `packing: true`): attention_mask [B, T] holds each token's
// sample index within its row (1, 1, 1, 2, 2, 0 = padding) instead of 0/1. The families turn
// it into what unpacked samples would see: `allowed` [B, 1, T, T] bool, query i may attend key
// j when both belong to the same sample and j <= i (a padding query sees every key, which
// keeps its softmax finite; its output reaches nothing), and `positions` [B, T] int64, each
// token's index within its own sample (padding 0), for rotary embeddings. Prefix-tuning slots
// are added in front by the families as for an unpacked batch (visible to every position).
struct PackedLayout {
  at::Tensor positions, allowed;
};
// Whether attention_mask carries sample indices (some value above 1). A 0/1 or undefined
// mask is not packed: the families then run exactly their unpacked code.
bool is_packed_mask(const at::Tensor& attention_mask);
// The layout of a packed mask, on `device`. A sample's tokens must be one run and the
// indices must grow along the row (what data::collate_packed writes); otherwise an error.
PackedLayout packed_layout(const at::Tensor& attention_mask, const c10::Device& device);

class CausalLM : public torch::nn::Module {
 public:
  // input_ids [B, T] int64; attention_mask [B, T] (1 = token, 0 = padding) or undefined.
  // Returns logits [B, T, vocab] in float32.
  virtual at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) = 0;
  virtual const ModelConfig& config() const = 0;
  // Incremental decoding: input_ids [B, T] continue the sequences held in `cache`; their
  // keys/values are appended to the cache. attention_mask [B, T] marks padding among the new
  // tokens (0; undefined = none): padding slots are never attended by real tokens and take
  // no position, so left-padded rows equal their unpadded selves. Returns logits
  // [B, T, vocab] in float32; without padding, equal to the last T rows of forward() on the
  // whole sequence. Units go through the unit runner like forward() (ZeRO-3 gathers them);
  // call it under no-grad (torch::NoGradGuard): a runner may re-run a unit under grad.
  // last_only: only the last position's logits are computed ([B, 1, vocab]; the same values
  // as the last row of the full result): what generation needs from a prompt.
  virtual at::Tensor forward_cached(const at::Tensor& input_ids, KVCache& cache,
                                    const at::Tensor& attention_mask = {}, bool last_only = false);
  // The causal-LM loss SUM of labels [B, T] (HF's shift: position t predicts label t + 1,
  // -100 ignored); count receives the number of label tokens. The same value as
  // causal_lm_loss_sum(forward(...), labels), but the families put only the positions that
  // have a label through the head, chunk by chunk (models/chunked_loss.h), inside the head's
  // unit (so ZeRO-3 gathers and recomputes it as before): no [B, T, vocab] logits exist.
  // This default computes exactly causal_lm_loss_sum(forward(...)).
  virtual at::Tensor forward_loss(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                  const at::Tensor& labels, int64_t* count = nullptr);
  // Where the model's parameters are (the first one's device; the CPU without parameters).
  // Callers put inputs there (runtime/device.h); the families build masks and tables on the
  // device of input_ids.
  c10::Device device() const;
  // The attention kernel the families run (models/attention.h); eager unless set.
  void set_attention_kernel(AttentionKernel kernel) { attention_kernel_ = kernel; }
  AttentionKernel attention_kernel() const { return attention_kernel_; }
  // Tokens per chunk of the fused head + loss; 0 (the default) = default_loss_chunk_tokens.
  void set_loss_chunk_tokens(int64_t tokens) { loss_chunk_tokens_ = tokens; }
  int64_t loss_chunk_tokens() const { return loss_chunk_tokens_; }
  // Every Linear with its HF module path ("model.layers.0.mlp.down_proj").
  std::vector<std::pair<std::string, Linear>> linears();
  // Names of the model's own parameters (what save_pretrained writes), recorded when the
  // model is built so that adapter parameters added later are told apart.
  const std::vector<std::string>& base_parameter_names() const { return base_names_; }
  void record_base_parameters();

  // Units are the model's natural blocks in forward order (embedding, each decoder layer,
  // final norm + head). The model runs every unit through a runner that by default just
  // calls it; the ZeRO engine (and activation checkpointing) install their own from outside,
  // so the model itself knows nothing about sharding. A unit function must capture what it
  // needs by value: a runner may call it again during backward (recompute).
  using UnitFn = std::function<at::Tensor(const at::Tensor& input)>;
  using UnitRunner = std::function<at::Tensor(int64_t unit, const UnitFn& fn, const at::Tensor& input)>;
  void set_unit_runner(UnitRunner runner) { runner_ = std::move(runner); }
  // Extra key/value slots prepended to every attention layer's keys and values and visible
  // to every position (prefix tuning); positions of the real tokens do not move. Returns
  // {k, v}, each [batch, kv_heads, N, head_dim], or undefined tensors for none. Installed
  // from outside (peft/); called inside each layer's unit, so it must be cheap.
  using PrefixKV = std::function<std::pair<at::Tensor, at::Tensor>(int64_t layer, int64_t batch)>;
  void set_prefix_provider(PrefixKV provider) { prefix_ = std::move(provider); }
  // A transform of the token embeddings [B, T, H] (the embedding unit's output) before the
  // first layer, in forward() and forward_loss() only (never forward_cached): NEFTune's
  // training noise, installed by the trainer around its training forwards (HF's forward
  // hook on get_input_embeddings()). It runs outside the embedding unit, so a unit that is
  // recomputed in backward never draws it twice. Unset (the default): nothing happens.
  using EmbeddingHook = std::function<at::Tensor(const at::Tensor& embeddings)>;
  void set_embedding_hook(EmbeddingHook hook) { embedding_hook_ = std::move(hook); }

  // The parameter-name prefixes of each unit, in forward order. A parameter belongs to the
  // first unit with a prefix it starts with; parameters of no unit (adapter modules added
  // at the model's top level, such as a prefix encoder) stay whole on every rank.
  // The default is one unit holding everything.
  virtual std::vector<std::vector<std::string>> unit_prefixes() const { return {{""}}; }

 protected:
  PrefixKV prefix_;
  at::Tensor run_unit(int64_t unit, const UnitFn& fn, const at::Tensor& input) {
    return runner_ ? runner_(unit, fn, input) : fn(input);
  }
  at::Tensor embedding_output(const at::Tensor& embeddings) {
    return embedding_hook_ ? embedding_hook_(embeddings) : embeddings;
  }
  EmbeddingHook embedding_hook_;

 private:
  std::vector<std::string> base_names_;
  UnitRunner runner_;
  int64_t loss_chunk_tokens_ = 0;
  AttentionKernel attention_kernel_ = AttentionKernel::kEager;
};

// A model of the family named by config.model_type with randomly initialised weights
// (normal(0, initializer_range) like HF's _init_weights; seeded by the caller via torch).
std::shared_ptr<CausalLM> build_model(const ModelConfig& config);

// config.json + safetensors from dir; every checkpoint tensor must match a parameter by name
// and shape (tied lm_head may be absent); missing or unexpected names are an error listing
// them. Weights are converted to `dtype`. The model is made in `dtype` without init and
// filled one tensor at a time (HF's low_cpu_mem_usage): peak memory is the model in `dtype`
// plus one 64 MiB read chunk (st::File::read_into). The values, and the CPU generator's
// state afterwards, are exactly those of build_model + load_weights + to(dtype).
// device: where the parameters are made; on a GPU each tensor is read from the mapped file
// straight into device memory (no host copy of the model; the memory check is then skipped).
std::shared_ptr<CausalLM> load_pretrained(const std::string& dir,
                                          at::ScalarType dtype = at::kFloat,
                                          c10::Device device = c10::Device(c10::kCPU));
// Loads only the weights into an existing model (same rules), each tensor read and cast
// straight into its parameter.
void load_weights(CausalLM& model, const std::string& dir);

// Advances the default CPU generator as `draws` 32-bit outputs would (the draws a skipped
// init would have made), without computing them.
void advance_cpu_rng(uint64_t draws);

// HF's name of a dtype ("bfloat16", "float32", ...), as config.json's torch_dtype writes it.
std::string hf_dtype_name(at::ScalarType dtype);

// The model's config.json as a save writes it: torch_dtype set to `written`, the dtype of
// the saved weights (HF's save_pretrained), unless the file had none and it is float32.
nlohmann::json config_for_save(const CausalLM& model, at::ScalarType written);

// Writes config.json + model.safetensors (sharded with an index past max_shard_bytes);
// config.json's torch_dtype names the dtype the weights were written in (as HF does).
void save_pretrained(CausalLM& model, const std::string& dir,
                     uint64_t max_shard_bytes = 5'000'000'000ull);

// Cross-entropy of logits[:, :-1] against labels[:, 1:] over positions whose label is not
// -100 (HF's causal shift). Returns the SUM over those tokens; count receives their number,
// so callers can average over all label tokens of an accumulated batch.
at::Tensor causal_lm_loss_sum(const at::Tensor& logits, const at::Tensor& labels,
                              int64_t* count = nullptr);

// What forward_loss feeds the head: HF's causal shift with the unlabelled positions dropped.
// hidden [B, T, H], labels [B, T] -> hidden rows [N, H] of the positions t whose label t + 1
// is not -100 (batch-major, in order), their targets [N] and N.
struct LabelRows {
  at::Tensor hidden, targets;
  int64_t count = 0;
};
LabelRows select_label_rows(const at::Tensor& hidden, const at::Tensor& labels);

// The LM head's loss sum over rows y [N, H] against targets [N] (-100 ignored): the head's
// weight (or tied_weight when head is empty, for tied embeddings) through
// chunked_linear_cross_entropy. A head with adapter terms (LoRA on lm_head) or a bias is
// applied as a module, giving the logits of these N rows at once.
at::Tensor lm_head_loss_sum(const at::Tensor& y, Linear head, const at::Tensor& tied_weight,
                            const at::Tensor& targets, int64_t chunk_tokens);

}  // namespace ftrun::models
