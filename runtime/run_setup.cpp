// One run setup for train and eval (see run_setup.h).
#include "runtime/run_setup.h"

#include <algorithm>
#include <stdexcept>

#include "data/token_cache.h"
#include "models/model.h"
#include "runtime/deepspeed.h"

namespace ftrun::runtime {

int64_t pad_id_of(const models::ModelConfig& mc) {
  return mc.pad_token_id >= 0 ? mc.pad_token_id : (mc.eos_token_id.empty() ? 0 : mc.eos_token_id[0]);
}

void check_token_ids(const models::ModelConfig& mc, const data::Tokenizer& tok, const std::string& tokenizer_dir) {
  const int64_t V = mc.vocab_size;
  const std::string limit = ", beyond the model's vocabulary of " + std::to_string(V) + " (" +
                            models::config_key(mc, "vocab_size") + " in " + mc.path + ")";
  auto config_id = [&](const std::string& key, int64_t id) {
    if (id >= V) throw std::runtime_error(mc.path + ": " + key + " is " + std::to_string(id) + limit);
  };
  config_id("bos_token_id", mc.bos_token_id);
  config_id("pad_token_id", mc.pad_token_id);
  for (int64_t id : mc.eos_token_id) config_id("eos_token_id", id);
  const int64_t n = tok.vocab_size();
  if (n <= V) return;
  // The tokenizer reaches past the table: name the first special token there (the added
  // tokens of tokenizer_config.json are what usually does), else the first id. The scan is
  // bounded: the tokenizer's own loader has already refused absurd ids.
  auto piece = [&](int64_t id) {
    try {
      return tok.decode({id}, /*skip_special=*/false);
    } catch (const std::exception&) {
      return std::string("#") + std::to_string(id);
    }
  };
  const int64_t scan_end = std::min<int64_t>(n, V + (int64_t(1) << 20));
  for (int64_t id = V; id < scan_end; ++id)
    if (tok.is_special(id))
      throw std::runtime_error(tokenizer_dir + "/tokenizer_config.json: special token '" + piece(id) + "' has id " +
                               std::to_string(id) + limit);
  throw std::runtime_error(tokenizer_dir + ": the tokenizer has " + std::to_string(n) + " tokens: token '" + piece(V) +
                           "' has id " + std::to_string(V) + limit);
}

namespace {

RunSetup common(const Config& cfg, int world_size) {
  RunSetup s;
  s.cfg = &cfg;
  s.warnings = cfg.warnings;
  s.zero_stage = zero_stage_of(cfg, world_size, &s.warnings);
  return s;
}

}  // namespace

RunSetup setup_run(const Config& cfg, int world_size) {
  if (cfg.model_dir.empty())
    throw std::runtime_error(cfg.path + ": model_dir is not set (add `model_dir:` to the YAML, "
                                        "or pass --model-dir / --set model_dir=...)");
  RunSetup s = common(cfg, world_size);
  s.model_config = models::load_model_config(cfg.model_dir);
  s.tokenizer = data::load_tokenizer(cfg.model_dir);
  check_token_ids(s.model_config, *s.tokenizer, cfg.model_dir);
  s.chat_template = data::make_template(
      cfg.chat_template.empty() ? data::template_for_model(s.model_config.model_type, *s.tokenizer) : cfg.chat_template);
  s.pad_id = pad_id_of(s.model_config);
  return s;
}

RunSetup setup_run(const Config& cfg, int world_size, const Inference& inf) {
  RunSetup s = common(cfg, world_size);
  s.model_config = inf.model->config();
  s.tokenizer = inf.tokenizer;
  s.chat_template = inf.chat_template;
  s.pad_id = pad_id_of(s.model_config);
  return s;
}

std::vector<data::Sample> RunSetup::encode(const std::string& file, comm::Comm& comm) const {
  data::EncodeOptions enc{cfg->max_input_length, cfg->max_output_length, cfg->combine};
  const auto cache_dir = data::default_cache_dir(cfg->training_args.output_dir);
  std::vector<data::Sample> out;
  if (comm.rank() == 0) out = data::load_or_build(file, *chat_template, *tokenizer, enc, cache_dir);
  comm.barrier();
  if (comm.rank() != 0) out = data::load_or_build(file, *chat_template, *tokenizer, enc, cache_dir);
  return out;
}

std::vector<PredictRow> RunSetup::rows(const std::string& file, const std::string& key) const {
  try {
    return prediction_rows(file, *chat_template, *tokenizer, cfg->max_input_length, cfg->combine);
  } catch (const std::exception& e) {
    throw std::runtime_error(key + ": " + e.what());
  }
}

PredictOptions RunSetup::predict_options(int world_size, int64_t max_new_tokens) const {
  const auto& args = cfg->training_args;
  PredictOptions po;
  po.generate.max_new_tokens = max_new_tokens > 0 ? max_new_tokens : eval_max_new_tokens(args.generation_config);
  po.generate.stop_ids = eval_stop_ids(*chat_template, *tokenizer, model_config);
  po.batch_size = args.per_device_eval_batch_size;
  po.synced = world_size > 1 && zero_stage == 3;
  return po;
}

}  // namespace ftrun::runtime
