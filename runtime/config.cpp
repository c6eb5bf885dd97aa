// Loads the run configuration in three passes: YAML -> JSON (YAML 1.2 scalar typing, the
// line of every node kept in a side table keyed by JSON pointer) -> `--set` overrides ->
// validation into Config. One typed tree lets overrides and YAML share a single conversion,
// and the side table lets every error point at the file line (or the --set) it came from.
#include "runtime/config.h"

// TORCH_VERSION_MAJOR only (attn_implementation: sdpa). The libFuzzer build compiles this file
// without libtorch (tests/fuzz): there the version check is left out.
#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>

namespace ftrun::runtime {
namespace {

using json = nlohmann::json;

// Where a node came from: a line of the file, or a --set expression.
struct Origin {
  int line = 0;          // 1-based; 0 = unknown
  std::string set_expr;  // non-empty for values that a --set gave
};

// A node's address: the JSON pointer keys the side table, the dotted name goes in messages.
struct Path {
  std::string pointer;
  std::string dotted;
  Path key(const std::string& k) const {
    std::string esc;
    for (char c : k) {
      if (c == '~') esc += "~0";
      else if (c == '/') esc += "~1";
      else esc += c;
    }
    return {pointer + "/" + esc, dotted.empty() ? k : dotted + "." + k};
  }
  Path index(size_t i) const {
    return {pointer + "/" + std::to_string(i), dotted + "[" + std::to_string(i) + "]"};
  }
};

class Origins {
 public:
  void set(const std::string& pointer, Origin o) { table_[pointer] = std::move(o); }
  bool has(const std::string& pointer) const { return table_.count(pointer) != 0; }
  // A replaced subtree must not keep the lines of what it replaced.
  void erase_below(const std::string& pointer) {
    const std::string prefix = pointer + "/";
    auto it = table_.lower_bound(prefix);
    while (it != table_.end() && it->first.compare(0, prefix.size(), prefix) == 0)
      it = table_.erase(it);
  }
  // A key that is missing is reported at its parent's line.
  Origin find(std::string pointer) const {
    for (;;) {
      auto it = table_.find(pointer);
      if (it != table_.end()) return it->second;
      if (pointer.empty()) return {};
      pointer.erase(pointer.rfind('/'));
    }
  }

 private:
  std::map<std::string, Origin> table_;
};

std::string where(const std::string& file, const Origin& o) {
  if (!o.set_expr.empty()) return file + ": --set '" + o.set_expr + "'";
  if (o.line > 0) return file + ":" + std::to_string(o.line);
  return file;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// How a value looks in a message; a quoted string that YAML 1.2 would have read as a number,
// bool or null gets a hint, since stray quotes are the usual cause.
std::string describe(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case json::value_t::array: return "a list";
    case json::value_t::object: return "a map";
    case json::value_t::string: {
      const auto& s = v.get_ref<const std::string&>();
      std::string d = "'" + s + "'";
      if (!s.empty() && !yaml12_scalar(s).is_string()) d += " (a quoted string: drop the quotes)";
      return d;
    }
    default: return v.dump();
  }
}

// ---- YAML -> JSON -------------------------------------------------------------------------

// Bounds on a config (issue 16, "bounded parsing"): a real one is a few KB, nests 3-4 levels and
// has a few hundred nodes. YAML aliases are expanded by the conversion below each time they are
// used, so a nine-line "billion laughs" document would otherwise grow to 10^9 nodes.
constexpr size_t kMaxConfigBytes = 4u << 20;
constexpr size_t kMaxConfigNodes = 20000;  // after alias expansion
constexpr int kMaxConfigDepth = 64;

struct Converter {
  const std::string& file;
  Origins& origins;
  const std::string* set_expr;  // non-null while converting a --set value
  mutable size_t nodes = 0;     // converted so far, aliases counted each time (kMaxConfigNodes)
  mutable int depth = 0;

  Origin origin(int line) const { return set_expr ? Origin{0, *set_expr} : Origin{line, ""}; }

  [[noreturn]] void fail(const Path& p, int line, const std::string& msg) const {
    std::string head = where(file, origin(line));
    throw std::runtime_error(head + ": " + (p.dotted.empty() ? "" : p.dotted + ": ") + msg);
  }

  json scalar(const YAML::Node& n, const Path& p, int line) const {
    const std::string& tag = n.Tag();
    const std::string& text = n.Scalar();
    if (tag == "!" || tag == "tag:yaml.org,2002:str") return text;  // quoted or !!str
    json v = yaml12_scalar(text);
    if (tag == "?" || tag.empty()) return v;
    if (tag == "tag:yaml.org,2002:int" && v.is_number_integer()) return v;
    if (tag == "tag:yaml.org,2002:float" && v.is_number()) return v.get<double>();
    if (tag == "tag:yaml.org,2002:bool" && v.is_boolean()) return v;
    if (tag == "tag:yaml.org,2002:null" && v.is_null()) return v;
    fail(p, line, "unsupported tag '" + tag + "' on '" + text + "'");
  }

  json convert(const YAML::Node& n, const Path& p, int line) const {
    if (++nodes > kMaxConfigNodes)
      fail(p, line, "the document expands to more than " + std::to_string(kMaxConfigNodes) +
                        " nodes (a config has a few hundred; YAML aliases (*name) count each time they are used)");
    struct Level {  // nesting depth, undone on every way out
      int& d;
      explicit Level(int& d_) : d(++d_) {}
      ~Level() { --d; }
    } level(depth);
    if (depth > kMaxConfigDepth)
      fail(p, line, "nested deeper than " + std::to_string(kMaxConfigDepth) + " levels (a config nests a few)");
    origins.erase_below(p.pointer);
    origins.set(p.pointer, origin(line));
    switch (n.Type()) {
      case YAML::NodeType::Scalar:
        return scalar(n, p, line);
      case YAML::NodeType::Sequence: {
        json a = json::array();
        size_t i = 0;
        for (const auto& e : n) {
          a.push_back(convert(e, p.index(i), e.Mark().line + 1));
          ++i;
        }
        return a;
      }
      case YAML::NodeType::Map: {
        json o = json::object();
        for (auto it = n.begin(); it != n.end(); ++it) {
          const YAML::Node k = it->first;  // a copy: `it->` returns a temporary proxy
          const int kline = k.Mark().line + 1;
          if (!k.IsScalar() || k.Scalar().empty())
            fail(p, kline, "map keys must be non-empty scalars");
          const std::string& key = k.Scalar();
          const Path kp = p.key(key);
          if (o.contains(key)) {
            fail(kp, kline, "duplicate key (first given at line " +
                                std::to_string(origins.find(kp.pointer).line) + ")");
          }
          const YAML::Node value = it->second;
          o[key] = convert(value, kp, kline);
          origins.set(kp.pointer, origin(kline));  // keys, not values, locate a map entry
        }
        return o;
      }
      default:
        return nullptr;
    }
  }
};

// ---- --set --------------------------------------------------------------------------------

void apply_override(json& root, const std::string& expr, const std::string& file,
                    Origins& origins) {
  const std::string head = file + ": --set '" + expr + "': ";
  const auto eq = expr.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::runtime_error(head + "malformed override, expected KEY=VALUE "
                                    "(e.g. training_args.max_steps=100)");
  const std::string key = expr.substr(0, eq), text = expr.substr(eq + 1);
  std::vector<std::string> segs;
  for (size_t start = 0;;) {
    const auto dot = key.find('.', start);
    segs.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (segs.back().empty())
      throw std::runtime_error(head + "malformed override: empty segment in key '" + key + "'");
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own limit; its message is "bad file"
    throw std::runtime_error(head + "value nested deeper than " + std::to_string(kMaxConfigDepth) + " levels");
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(head + "value is not valid YAML (" + e.msg +
                             "); quote it, e.g. " + key + "='...'");
  }
  Converter conv{file, origins, &expr};
  json* cur = &root;
  Path p;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (cur->is_null()) {  // creates missing intermediate maps
      *cur = json::object();
      origins.set(p.pointer, conv.origin(0));
    }
    if (!cur->is_object())
      throw std::runtime_error(head + (p.dotted.empty() ? "top level" : p.dotted) + " is " +
                               describe(*cur) + ", not a map");
    p = p.key(segs[i]);
    if (!cur->contains(segs[i])) origins.set(p.pointer, conv.origin(0));
    cur = &(*cur)[segs[i]];
  }
  *cur = conv.convert(value, p, 0);
}

// ---- validation ---------------------------------------------------------------------------

const std::vector<std::string> kTopKeys = {
    "data_config", "max_input_length", "max_output_length", "combine", "freezeV",
    "training_args", "peft_config", "model_dir", "data_dir", "chat_template",
    "zero_stage", "zero3_keep_params", "comm_backend", "collective_timeout", "adapter_name_or_path",
    "torch_dtype", "nonfinite", "packing", "loraplus_lr_ratio", "loraplus_lr_embedding", "attn_implementation",
    "device"};
const std::vector<std::string> kDataKeys = {"train_file", "val_file", "test_file", "num_proc"};

// HF TrainingArguments / Seq2SeqTrainingArguments options that change nothing ftrun computes
// (hub, reporting, device and dataloader knobs, ...), plus the demo's own `swanlab`. Rejecting
// them would break configs written for the demo, so they pass with a warning.
const std::vector<std::string> kIgnoredTrainingArgs = {
    "do_train", "do_eval", "do_predict", "prediction_loss_only",
    "eval_accumulation_steps", "eval_delay", "torch_empty_cache_steps", "log_level_replica",
    "log_on_each_node", "logging_first_step", "logging_nan_inf_filter",
    "save_safetensors", "save_on_each_node", "save_only_model",
    "restore_callback_states_from_checkpoint", "use_mps_device",
    "data_seed", "jit_mode_eval", "use_ipex", "fp16_opt_level", "half_precision_backend",
    "bf16_full_eval", "fp16_full_eval", "tf32", "local_rank", "ddp_backend", "tpu_num_cores",
    "tpu_metrics_debug", "debug", "dataloader_drop_last", "dataloader_prefetch_factor",
    "past_index", "run_name", "disable_tqdm", "remove_unused_columns", "label_names",
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "ignore_data_skip",
    "fsdp_min_num_params", "fsdp_config", "fsdp_transformer_layer_cls_to_wrap",
    "accelerator_config", "optim_args", "group_by_length", "length_column_name",
    "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "skip_memory_metrics",
    "use_legacy_prediction_loop", "push_to_hub", "resume_from_checkpoint", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "gradient_checkpointing_kwargs", "include_inputs_for_metrics", "include_for_metrics",
    "eval_do_concat_batches", "fp16_backend", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token", "mp_parameters", "auto_find_batch_size",
    "full_determinism", "torchdynamo", "ray_scope", "ddp_timeout", "torch_compile",
    "torch_compile_backend", "torch_compile_mode", "dispatch_batches", "split_batches",
    "include_tokens_per_second", "include_num_input_tokens_seen", "optim_target_modules",
    "batch_eval_metrics", "eval_on_start", "use_liger_kernel", "eval_use_gather_object",
    "average_tokens_across_devices", "sortish_sampler", "generation_max_length",
    "generation_num_beams", "swanlab"};

// Options whose non-default values would change the training math in a way ftrun does not
// implement: silently ignoring them would train something other than what was asked for.
struct DefaultOnly {
  const char* key;
  std::function<bool(const json&)> is_default;
  const char* why;
};
bool null_or_empty(const json& v) {
  return v.is_null() || ((v.is_object() || v.is_array()) && v.empty()) ||
         (v.is_string() && v.get_ref<const std::string&>().empty()) ||
         (v.is_boolean() && !v.get<bool>());
}
const std::vector<DefaultOnly>& default_only_args() {
  static const std::vector<DefaultOnly> list = {
      {"optim", [](const json& v) { return v == "adamw_torch"; },
       "ftrun's optimizer is AdamW ('adamw_torch'); other optimizers are not implemented"},
      {"label_smoothing_factor", [](const json& v) { return v.is_number() && v == 0; },
       "label smoothing is not implemented; use 0"},
      {"fsdp", null_or_empty,
       "FSDP is not supported; use deepspeed: configs/ds_zero_3.json (ZeRO-3)"},
      {"lr_scheduler_kwargs", null_or_empty, "scheduler kwargs are not supported"},
      {"adafactor", [](const json& v) { return v == false; }, "Adafactor is not implemented"},
      {"per_gpu_train_batch_size", [](const json& v) { return v.is_null(); },
       "deprecated in HF; use per_device_train_batch_size"},
      {"per_gpu_eval_batch_size", [](const json& v) { return v.is_null(); },
       "deprecated in HF; use per_device_eval_batch_size"},
  };
  return list;
}

const std::vector<std::string> kStrategies = {"no", "steps", "epoch"};
const std::vector<std::string> kSchedulers = {"linear", "constant", "constant_with_warmup",
                                              "cosine"};
const std::vector<std::string> kHfOnlySchedulers = {
    "cosine_with_restarts", "polynomial", "inverse_sqrt", "reduce_lr_on_plateau",
    "cosine_with_min_lr", "warmup_stable_decay"};
// HF's report_to integrations (transformers 4.49 INTEGRATION_TO_CALLBACK); ftrun has
// tensorboard only, the others are accepted with a warning.
const std::vector<std::string> kHfIntegrations = {
    "azure_ml", "comet_ml", "mlflow", "neptune", "tensorboard", "wandb",
    "codecarbon", "clearml", "dagshub", "flyte", "dvclive"};
const std::vector<std::string> kLogLevels = {"debug", "info", "warning", "error", "critical",
                                             "passive"};

// GenerationConfig options with HF's defaults. Evaluation decodes greedily up to
// max_new_tokens and stops on the chat template's stop ids, so any of these set to something
// else would be ignored: that draws a warning. A key outside this list (and not
// max_new_tokens) is an unknown-key error, so a typo never silently falls back to 512 tokens.
const std::vector<std::pair<std::string, json>>& generation_defaults() {
  static const std::vector<std::pair<std::string, json>> list = {
      {"max_length", 20}, {"min_length", 0}, {"min_new_tokens", nullptr},
      {"early_stopping", false}, {"max_time", nullptr}, {"stop_strings", nullptr},
      {"do_sample", false}, {"num_beams", 1}, {"num_beam_groups", 1}, {"penalty_alpha", nullptr},
      {"use_cache", true}, {"temperature", 1.0}, {"top_k", 50}, {"top_p", 1.0},
      {"min_p", nullptr}, {"typical_p", 1.0}, {"epsilon_cutoff", 0.0}, {"eta_cutoff", 0.0},
      {"diversity_penalty", 0.0}, {"repetition_penalty", 1.0},
      {"encoder_repetition_penalty", 1.0}, {"length_penalty", 1.0},
      {"no_repeat_ngram_size", 0}, {"bad_words_ids", nullptr}, {"force_words_ids", nullptr},
      {"renormalize_logits", false}, {"constraints", nullptr}, {"forced_bos_token_id", nullptr},
      {"forced_eos_token_id", nullptr}, {"remove_invalid_values", false},
      {"exponential_decay_length_penalty", nullptr}, {"suppress_tokens", nullptr},
      {"begin_suppress_tokens", nullptr}, {"num_return_sequences", 1},
      {"output_attentions", false}, {"output_hidden_states", false}, {"output_scores", false},
      {"output_logits", nullptr}, {"return_dict_in_generate", false}, {"pad_token_id", nullptr},
      {"bos_token_id", nullptr}, {"eos_token_id", nullptr}};
  return list;
}

// The metadata every PEFT config carries (PEFT writes it into adapter_config.json, so configs
// pasted from one have it). None of it changes what ftrun trains; set, it draws a warning.
// The strategy plug-ins (peft/) accept these keys too and check everything else.
const std::vector<std::pair<std::string, std::string>> kPeftMetadata = {
    {"inference_mode", "ftrun trains the adapter whatever inference_mode says"},
    {"base_model_name_or_path", "the base model is model_dir"},
    {"revision", "the base model is model_dir, as it is on disk"},
    {"auto_mapping", "PEFT metadata"},
    {"peft_version", "PEFT metadata"}};

// The class of every key the Validator dispatches on, with a value that shows it
// (AcceptedKey::example). accepted_keys() checks that this covers the dispatch tables.
struct Classified {
  const char* section;
  const char* key;
  KeyClass cls;
  json example;
};
const std::vector<Classified>& classified_keys() {
  using K = KeyClass;
  static const std::vector<Classified> list = {
      {"", "data_config", K::kActed, {{"train_file", "other.jsonl"}}},
      {"", "max_input_length", K::kActed, 99},
      {"", "max_output_length", K::kActed, 99},
      {"", "combine", K::kActed, false},
      {"", "freezeV", K::kWarned, true},  // the demo never reads it either
      {"", "training_args", K::kActed, {{"max_steps", 7}}},
      {"", "peft_config", K::kActed, {{"peft_type", "PREFIX_TUNING"}}},
      {"", "model_dir", K::kActed, "/models/m"},
      {"", "data_dir", K::kActed, "/data"},
      {"", "chat_template", K::kActed, "glm4"},
      {"", "zero_stage", K::kActed, 2},
      {"", "zero3_keep_params", K::kActed, true},
      {"", "comm_backend", K::kActed, "mpi"},
      {"", "collective_timeout", K::kActed, 60},
      {"", "adapter_name_or_path", K::kActed, "/adapters/a"},
      {"", "torch_dtype", K::kActed, "bfloat16"},
      {"", "packing", K::kActed, true},
      {"", "attn_implementation", K::kActed, "eager"},
      {"", "device", K::kActed, "cpu"},
      {"", "nonfinite", K::kActed, "skip"},
      // LoRA+ (LLaMA-Factory writes it at the top level; folded into peft_config).
      {"", "loraplus_lr_ratio", K::kActed, 16},
      {"", "loraplus_lr_embedding", K::kRefused, 1e-6},
      {"data_config", "train_file", K::kActed, "t2.jsonl"},
      {"data_config", "val_file", K::kActed, "v2.jsonl"},
      {"data_config", "test_file", K::kActed, "t3.jsonl"},
      {"data_config", "num_proc", K::kWarned, 4},
      {"training_args", "output_dir", K::kActed, "./out2"},
      {"training_args", "overwrite_output_dir", K::kActed, true},
      {"training_args", "max_steps", K::kActed, 7},
      {"training_args", "num_train_epochs", K::kActed, 2.0},
      {"training_args", "learning_rate", K::kActed, 1e-4},
      {"training_args", "per_device_train_batch_size", K::kActed, 2},
      {"training_args", "per_device_eval_batch_size", K::kActed, 2},
      {"training_args", "gradient_accumulation_steps", K::kActed, 2},
      {"training_args", "weight_decay", K::kActed, 0.1},
      {"training_args", "adam_beta1", K::kActed, 0.8},
      {"training_args", "adam_beta2", K::kActed, 0.99},
      {"training_args", "adam_epsilon", K::kActed, 1e-6},
      {"training_args", "max_grad_norm", K::kActed, 0.5},
      {"training_args", "lr_scheduler_type", K::kActed, "cosine"},
      {"training_args", "warmup_steps", K::kActed, 3},
      {"training_args", "warmup_ratio", K::kActed, 0.1},
      {"training_args", "logging_strategy", K::kActed, "epoch"},
      {"training_args", "logging_steps", K::kActed, 5},
      {"training_args", "save_strategy", K::kActed, "epoch"},
      {"training_args", "save_steps", K::kActed, 5},
      {"training_args", "save_total_limit", K::kActed, 2},
      {"training_args", "eval_strategy", K::kActed, "steps"},
      {"training_args", "evaluation_strategy", K::kActed, "steps"},  // HF's old name; warns too
      {"training_args", "eval_steps", K::kActed, 5},
      {"training_args", "seed", K::kActed, 7},
      {"training_args", "predict_with_generate", K::kActed, true},
      {"training_args", "generation_config", K::kActed, {{"max_new_tokens", 16}}},
      {"training_args", "deepspeed", K::kActed, "configs/ds_zero_2.json"},
      {"training_args", "dataloader_num_workers", K::kWarned, 4},
      {"training_args", "gradient_checkpointing", K::kActed, true},
      {"training_args", "use_cpu", K::kActed, true},
      {"training_args", "no_cuda", K::kActed, true},
      {"training_args", "bf16", K::kActed, true},
      {"training_args", "fp16", K::kRefused, true},
      {"training_args", "log_level", K::kActed, "warning"},
      {"training_args", "report_to", K::kActed, "none"},
      {"training_args", "logging_dir", K::kActed, "/tmp/tb"},
      {"training_args", "optim", K::kRefused, "sgd"},
      {"training_args", "label_smoothing_factor", K::kRefused, 0.1},
      {"training_args", "neftune_noise_alpha", K::kActed, 5},
      {"training_args", "fsdp", K::kRefused, "full_shard"},
      {"training_args", "lr_scheduler_kwargs", K::kRefused, {{"num_cycles", 2}}},
      {"training_args", "adafactor", K::kRefused, true},
      {"training_args", "per_gpu_train_batch_size", K::kRefused, 4},
      {"training_args", "per_gpu_eval_batch_size", K::kRefused, 4},
      {"training_args.generation_config", "max_new_tokens", K::kActed, 16},
      {"peft_config", "peft_type", K::kActed, "PREFIX_TUNING"},
      {"peft_config", "task_type", K::kRefused, "SEQ_2_SEQ_LM"},
      {"peft_config", "loraplus_lr_ratio", K::kActed, 16},
      {"peft_config", "loraplus_lr_embedding", K::kRefused, 1e-6},
  };
  return list;
}

class Validator {
 public:
  Validator(const std::string& file, const Origins& origins, Config& cfg)
      : file_(file), origins_(origins), cfg_(cfg) {}

  void run(const json& root);
  // The training_args keys read into TrainingArgs fields (accepted_keys() classifies them).
  std::vector<std::string> training_field_names() {
    TrainingArgs scratch;
    std::vector<std::string> names;
    for (const auto& f : training_fields(scratch)) names.push_back(f.first);
    return names;
  }
  // In file order (the value checks run after all keys are read); --set ones last.
  std::vector<std::string> errors() const {
    auto sorted = errors_;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> out;
    for (auto& e : sorted) out.push_back(e.second);
    return out;
  }

 private:
  std::string at(const Path& p) const {
    return where(file_, origins_.find(p.pointer)) + ": " + (p.dotted.empty() ? "" : p.dotted + ": ");
  }
  void error(const Path& p, const std::string& msg) {
    const int line = origins_.find(p.pointer).line;
    errors_.push_back({line > 0 ? line : std::numeric_limits<int>::max(), at(p) + msg});
  }
  void warn(const Path& p, const std::string& msg) { cfg_.warnings.push_back(at(p) + msg); }

  // Keys in file order, so the first error listed is the first one in the file.
  std::vector<std::string> keys_in_order(const json& obj, const Path& p) const {
    std::vector<std::pair<int, std::string>> v;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      const int line = origins_.find(p.key(it.key()).pointer).line;
      v.push_back({line > 0 ? line : std::numeric_limits<int>::max(), it.key()});
    }
    std::stable_sort(v.begin(), v.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> keys;
    for (auto& e : v) keys.push_back(e.second);
    return keys;
  }

  void unknown_key(const Path& p, const std::string& key, const std::vector<std::string>& known,
                   const std::string& fallback) {
    const std::string best = closest_key(key, known);
    error(p, "unknown key" + (best.empty() ? fallback : " (did you mean '" + best + "'?)"));
  }

  bool get_int(const json& v, const Path& p, int64_t& out) {
    if (v.is_number_integer()) {
      out = v.get<int64_t>();
      return true;
    }
    if (v.is_number_float()) {  // 1e3 is an integer in intent
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9007199254740992.0) {
        out = static_cast<int64_t>(d);
        return true;
      }
    }
    error(p, "expected an integer, got " + describe(v));
    return false;
  }
  bool get_double(const json& v, const Path& p, double& out) {
    if (v.is_number()) {
      out = v.get<double>();
      return true;
    }
    error(p, "expected a number, got " + describe(v));
    return false;
  }
  bool get_bool(const json& v, const Path& p, bool& out) {
    if (v.is_boolean()) {
      out = v.get<bool>();
      return true;
    }
    static const std::set<std::string> yaml11 = {"yes", "no", "on", "off", "y", "n",
                                                 "Yes", "No", "On", "Off", "YES", "NO"};
    std::string hint;
    if (v.is_string() && yaml11.count(v.get<std::string>()))
      hint = " (YAML 1.2 reads yes/no/on/off as strings; write true or false)";
    error(p, "expected true or false, got " + describe(v) + hint);
    return false;
  }
  bool get_string(const json& v, const Path& p, std::string& out, bool null_ok) {
    if (v.is_string()) {
      out = v.get<std::string>();
      return true;
    }
    if (v.is_null() && null_ok) {
      out.clear();
      return true;
    }
    std::string hint;
    if (v.is_number() || v.is_boolean()) hint = " (quote it to make it a string)";
    error(p, std::string("expected a string") + (null_ok ? " or null" : "") + ", got " +
                 describe(v) + hint);
    return false;
  }

  void check_choice(const std::string& v, const Path& p, const std::vector<std::string>& allowed,
                    const std::vector<std::string>& known_elsewhere = {}) {
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return;
    if (std::find(known_elsewhere.begin(), known_elsewhere.end(), v) != known_elsewhere.end()) {
      error(p, "'" + v + "' is not supported by ftrun (supported: " + join(allowed, ", ") + ")");
      return;
    }
    const std::string best = closest_key(v, allowed);
    error(p, "expected one of " + join(allowed, ", ") + ", got '" + v + "'" +
                 (best.empty() ? "" : " (did you mean '" + best + "'?)"));
  }

  using Setter = std::function<void(const json&, const Path&)>;
  std::map<std::string, Setter> training_fields(TrainingArgs& t);
  std::vector<std::string> training_arg_names();
  void data_config(const json& v, const Path& p);
  void generation_config(const json& v, const Path& p);
  void peft_metadata(const json& v, const Path& p);
  void report_to(const json& v, const Path& p, std::vector<std::string>& out);
  void training_args(const json& v, const Path& p);
  void check_training_args(const Path& p);
  void loraplus();
  struct GivenKey {
    Path path;
    std::string key;
    json value;
  };
  std::vector<GivenKey> loraplus_keys_;  // top-level LoRA+ keys (LLaMA-Factory's spelling)

  const std::string& file_;
  const Origins& origins_;
  Config& cfg_;
  std::vector<std::pair<int, std::string>> errors_;
};

void Validator::run(const json& root) {
  const Path top;
  if (!root.is_object()) {
    error(top, "expected a map of keys at the top level, got " + describe(root));
    return;
  }
  bool have_data = false, have_in = false, have_out = false;
  for (const auto& key : keys_in_order(root, top)) {
    const json& v = root.at(key);
    const Path p = top.key(key);
    if (key == "data_config") {
      have_data = true;
      data_config(v, p);
    } else if (key == "max_input_length" || key == "max_output_length") {
      int64_t& dst = key == "max_input_length" ? cfg_.max_input_length : cfg_.max_output_length;
      (key == "max_input_length" ? have_in : have_out) = true;
      if (get_int(v, p, dst) && dst < 1) error(p, "must be >= 1, got " + std::to_string(dst));
    } else if (key == "combine") {
      get_bool(v, p, cfg_.combine);
    } else if (key == "freezeV") {
      get_bool(v, p, cfg_.freezeV);
      warn(p, "accepted for compatibility with the GLM-4 demo, but has no effect (the demo's "
              "finetune.py never reads it either; demo bug B8)");
    } else if (key == "training_args") {
      training_args(v, p);
    } else if (key == "peft_config") {
      if (v.is_null()) {
        cfg_.peft_config = nullptr;
      } else if (!v.is_object()) {
        error(p, "expected a map (peft_type: LORA, ...) or null, got " + describe(v));
      } else if (!v.contains("peft_type")) {
        error(p.key("peft_type"), "required key missing (e.g. LORA or PREFIX_TUNING)");
      } else if (!v.at("peft_type").is_string()) {
        error(p.key("peft_type"), "expected a string, got " + describe(v.at("peft_type")));
      } else {
        cfg_.peft_config = v;
        peft_metadata(v, p);
      }
    } else if (key == "model_dir") {
      get_string(v, p, cfg_.model_dir, true);
    } else if (key == "data_dir") {
      get_string(v, p, cfg_.data_dir, true);
    } else if (key == "chat_template") {
      get_string(v, p, cfg_.chat_template, true);
    } else if (key == "adapter_name_or_path") {
      get_string(v, p, cfg_.adapter_name_or_path, true);
    } else if (key == "zero_stage") {
      if (!v.is_null() && get_int(v, p, cfg_.zero_stage) && (cfg_.zero_stage < 0 || cfg_.zero_stage > 3))
        error(p, "expected 0, 1, 2 or 3, got " + std::to_string(cfg_.zero_stage));
    } else if (key == "zero3_keep_params") {
      get_bool(v, p, cfg_.zero3_keep_params);
    } else if (key == "packing") {
      get_bool(v, p, cfg_.packing);
    } else if (key == "device") {
      // Whether a GPU is there is known only at run time (runtime/device.h says so then).
      if (get_string(v, p, cfg_.device, true) && cfg_.device != "auto" && cfg_.device != "cpu" && cfg_.device != "cuda")
        error(p, "expected auto, cpu or cuda, got '" + cfg_.device + "'");
    } else if (key == "attn_implementation") {
      // The same rules as models::resolve_attention_kernel (which the trainer applies), here so
      // that the error names the file and line.
      const std::string& a = cfg_.attn_implementation;
      if (get_string(v, p, cfg_.attn_implementation, true)) {
        if (a == "flash_attention_2")
          error(p, "flash_attention_2 is not a separate kernel in ftrun: sdpa uses FlashAttention where the mask "
                   "allows; use auto or sdpa");
        else if (a != "auto" && a != "eager" && a != "sdpa")
          error(p, "expected auto, eager or sdpa, got '" + a + "'");
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR < 2
        else if (a == "sdpa")
          error(p, "sdpa needs a build against libtorch >= 2.0 (this one has " TORCH_VERSION
                   "; the CUDA flavour, .ci/build-cuda, has 2.11); use auto or eager");
#endif
      }
    } else if (key == "torch_dtype") {
      // from_pretrained's torch_dtype; also accepts torch's spellings (torch.bfloat16, bf16).
      if (get_string(v, p, cfg_.torch_dtype, true)) {
        std::string d = cfg_.torch_dtype;
        if (d.rfind("torch.", 0) == 0) d = d.substr(6);
        if (d == "bf16") d = "bfloat16";
        if (d == "fp16" || d == "half") d = "float16";
        if (d == "fp32" || d == "float") d = "float32";
        if (d != "auto" && d != "bfloat16" && d != "float16" && d != "float32")
          error(p, "expected auto, bfloat16, float16 or float32, got '" + cfg_.torch_dtype + "'");
        cfg_.torch_dtype = d;
      }
    } else if (key == "comm_backend") {
      if (get_string(v, p, cfg_.comm_backend, true) && cfg_.comm_backend != "auto" &&
          cfg_.comm_backend != "gloo" && cfg_.comm_backend != "mpi" && cfg_.comm_backend != "nccl")
        error(p, "expected auto, gloo, mpi or nccl, got '" + cfg_.comm_backend + "'");
    } else if (key == "collective_timeout") {
      if (!v.is_number() || v.get<double>() <= 0) error(p, "expected a positive number of seconds, got " + describe(v));
      else cfg_.collective_timeout = v.get<double>();
    } else if (key == "loraplus_lr_ratio" || key == "loraplus_lr_embedding") {
      loraplus_keys_.push_back({p, key, v});  // resolved with peft_config's after the loop
    } else if (key == "nonfinite") {
      if (get_string(v, p, cfg_.nonfinite, false) && cfg_.nonfinite != "stop" && cfg_.nonfinite != "skip")
        error(p, "expected stop or skip, got '" + cfg_.nonfinite + "'");
    } else {
      // A data or training key written at the top level is a common slip; say where it goes.
      std::string hint;
      for (const auto& dk : kDataKeys)
        if (dk == key) hint = " (it belongs under data_config: data_config." + key + ")";
      for (const auto& tk : training_arg_names())
        if (tk == key) hint = " (it belongs under training_args: training_args." + key + ")";
      unknown_key(p, key, kTopKeys, hint.empty() ? " (known keys: " + join(kTopKeys, ", ") + ")"
                                                 : hint);
    }
  }
  if (!have_data) error(top.key("data_config"), "required key missing");
  if (!have_in) error(top.key("max_input_length"), "required key missing");
  if (!have_out) error(top.key("max_output_length"), "required key missing");
  loraplus();
  // Packed rows are max_input_length + max_output_length tokens long (data/packing.h).
  if (cfg_.packing && have_in && have_out && cfg_.max_input_length + cfg_.max_output_length <= 0)
    error(top.key("packing"), "packing: true needs a row length, but max_input_length + max_output_length is 0");

  // Relative data paths are relative to data_dir, as the demo joins them to its DATA_DIR.
  if (!cfg_.data_dir.empty()) {
    for (std::string* f : {&cfg_.data_config.train_file, &cfg_.data_config.val_file,
                           &cfg_.data_config.test_file}) {
      if (!f->empty() && std::filesystem::path(*f).is_relative())
        *f = (std::filesystem::path(cfg_.data_dir) / *f).string();
    }
  }
}

// LoRA+ (PEFT's create_loraplus_optimizer): loraplus_lr_ratio multiplies the learning rate
// of LoRA's B matrices. It may be written in peft_config (ftrun's place) or at the top level
// (LLaMA-Factory's); the value ends up in peft_config (so the checkpoint records it; the LoRA
// plug-in leaves it out of adapter_config.json) and in training_args.loraplus_lr_ratio (what
// the Stepper reads). It must never do nothing: without a LoRA peft_config it is an error,
// and so is loraplus_lr_embedding (ftrun has no LoRA on embedding layers).
void Validator::loraplus() {
  const bool lora = cfg_.peft_config.is_object() && cfg_.peft_config.value("peft_type", "") == "LORA";
  const std::string what = cfg_.peft_config.is_object()
                               ? "peft_type is " + cfg_.peft_config.value("peft_type", "") + ", which has none"
                               : "full fine-tuning (no peft_config) has none";
  std::vector<GivenKey> given = loraplus_keys_;
  const Path peft = Path{}.key("peft_config");
  if (cfg_.peft_config.is_object())
    for (const char* k : {"loraplus_lr_ratio", "loraplus_lr_embedding"})
      if (cfg_.peft_config.contains(k)) given.push_back({peft.key(k), k, cfg_.peft_config.at(k)});
  double ratio = 0;
  bool have = false;
  for (const auto& g : given) {
    const Path& p = g.path;
    const json& v = g.value;
    if (v.is_null()) continue;  // LLaMA-Factory's default: off
    if (g.key == "loraplus_lr_embedding") {
      error(p, "LoRA+'s embedding learning rate is for LoRA on embedding layers, which ftrun does not "
               "have (LoRA targets linear layers only); remove the key");
      continue;
    }
    double r = 0;
    if (!get_double(v, p, r)) continue;
    if (!(r > 0) || !std::isfinite(r)) {
      error(p, "expected a positive number (the B matrices' learning rate over A's), got " + describe(v));
    } else if (!lora) {
      error(p, "LoRA+ scales the learning rate of LoRA's B matrices, but " + what + "; remove the key");
    } else if (have && r != ratio) {
      error(p, "given twice with different values (" + describe(json(ratio)) + " and " + describe(v) + ")");
    } else {
      ratio = r;
      have = true;
    }
  }
  if (!have) return;
  cfg_.peft_config["loraplus_lr_ratio"] = ratio;
  cfg_.training_args.loraplus_lr_ratio = ratio;
}

void Validator::data_config(const json& v, const Path& p) {
  if (!v.is_object()) {
    error(p, "expected a map (train_file, val_file, test_file, num_proc), got " + describe(v));
    return;
  }
  DataConfig& d = cfg_.data_config;
  for (const auto& key : keys_in_order(v, p)) {
    const json& x = v.at(key);
    const Path kp = p.key(key);
    if (key == "train_file") {
      get_string(x, kp, d.train_file, true);
    } else if (key == "val_file") {
      get_string(x, kp, d.val_file, true);
    } else if (key == "test_file") {
      get_string(x, kp, d.test_file, true);
    } else if (key == "num_proc") {
      if (x.is_null()) d.num_proc = 1;
      else if (get_int(x, kp, d.num_proc) && d.num_proc < 1)
        error(kp, "must be >= 1, got " + std::to_string(d.num_proc));
      else if (d.num_proc > 1)
        warn(kp, "accepted but ignored: ftrun tokenizes the data once, before training, into "
                 "its token cache (one process), so there is nothing to spread over " +
                     std::to_string(d.num_proc) + " processes");
    } else {
      unknown_key(kp, key, kDataKeys, " (known keys: " + join(kDataKeys, ", ") + ")");
    }
  }
  if (d.train_file.empty())
    error(p.key("train_file"), "required: the training data file (e.g. train.jsonl)");
}

void Validator::generation_config(const json& v, const Path& p) {
  std::vector<std::string> known = {"max_new_tokens"};
  for (const auto& d : generation_defaults()) known.push_back(d.first);
  for (const auto& key : keys_in_order(v, p)) {
    if (key == "max_new_tokens") continue;  // checked where evaluation reads it
    const Path kp = p.key(key);
    auto d = std::find_if(generation_defaults().begin(), generation_defaults().end(),
                          [&](const auto& e) { return e.first == key; });
    if (d == generation_defaults().end()) {
      unknown_key(kp, key, known, " (not a GenerationConfig option ftrun knows)");
    } else if (v.at(key) != d->second) {
      warn(kp, "accepted but ignored: evaluation decodes greedily up to max_new_tokens and "
               "stops on the chat template's stop ids (got " + describe(v.at(key)) + ")");
    }
  }
}

void Validator::peft_metadata(const json& v, const Path& p) {
  for (const auto& key : keys_in_order(v, p)) {
    const json& x = v.at(key);
    if (key == "task_type") {
      if (!x.is_null() && x != "CAUSAL_LM") error(p.key(key), "only CAUSAL_LM is supported");
      continue;
    }
    for (const auto& m : kPeftMetadata)
      if (m.first == key && !null_or_empty(x))
        warn(p.key(key), "accepted but ignored (" + m.second + ")");
  }
}

// HF's report_to: null or "all" = every integration installed (HF 4.x's default), which for
// ftrun is tensorboard; "none" = nothing; else a name or a list of names. HF's other
// integrations are accepted with a warning (ftrun has none of them); an unknown name is an
// error, as in HF.
void Validator::report_to(const json& v, const Path& p, std::vector<std::string>& out) {
  std::vector<std::string> names;
  if (v.is_null()) {
    names = {"all"};
  } else if (v.is_string()) {
    names = {v.get<std::string>()};
  } else if (v.is_array()) {
    for (const auto& x : v) {
      if (!x.is_string()) {
        error(p, "expected integration names (all, none, tensorboard, ...), got " + describe(x) + " in the list");
        return;
      }
      names.push_back(x.get<std::string>());
    }
  } else {
    error(p, "expected all, none, an integration name or a list of them, got " + describe(v));
    return;
  }
  out.clear();
  if (names == std::vector<std::string>{"all"}) {
    out = {"tensorboard"};
    return;
  }
  if (names.empty() || names == std::vector<std::string>{"none"}) return;
  std::vector<std::string> ignored;
  for (const auto& n : names) {
    if (n == "all" || n == "none") {  // HF takes them alone only
      error(p, "'" + n + "' cannot be combined with other integrations; give it alone");
      return;
    }
    if (std::find(kHfIntegrations.begin(), kHfIntegrations.end(), n) == kHfIntegrations.end()) {
      std::vector<std::string> known = {"all", "none"};
      known.insert(known.end(), kHfIntegrations.begin(), kHfIntegrations.end());
      const std::string best = closest_key(n, known);
      error(p, "'" + n + "' is not an integration HF knows (known: " + join(known, ", ") + ")" +
                   (best.empty() ? "" : " (did you mean '" + best + "'?)"));
      return;
    }
    if (n != "tensorboard") ignored.push_back(n);
    else if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  }
  if (!ignored.empty())
    warn(p, "accepted but ignored: " + join(ignored, ", ") +
                " (ftrun reports to tensorboard only; metrics.jsonl and report.html are in output_dir)");
}

std::map<std::string, Validator::Setter> Validator::training_fields(TrainingArgs& t) {
  auto i64 = [this](int64_t& dst) {
    return Setter([this, &dst](const json& x, const Path& kp) { get_int(x, kp, dst); });
  };
  auto i64_or_null = [this](int64_t& dst, int64_t null_value) {
    return Setter([this, &dst, null_value](const json& x, const Path& kp) {
      if (x.is_null()) dst = null_value;
      else get_int(x, kp, dst);
    });
  };
  auto f64 = [this](double& dst) {
    return Setter([this, &dst](const json& x, const Path& kp) { get_double(x, kp, dst); });
  };
  auto boolean = [this](bool& dst) {
    return Setter([this, &dst](const json& x, const Path& kp) { get_bool(x, kp, dst); });
  };
  auto str = [this](std::string& dst, bool null_ok) {
    return Setter(
        [this, &dst, null_ok](const json& x, const Path& kp) { get_string(x, kp, dst, null_ok); });
  };
  return {
      {"output_dir", str(t.output_dir, false)},
      {"overwrite_output_dir", boolean(t.overwrite_output_dir)},
      {"max_steps", i64(t.max_steps)},
      {"num_train_epochs", f64(t.num_train_epochs)},
      {"learning_rate", f64(t.learning_rate)},
      {"per_device_train_batch_size", i64(t.per_device_train_batch_size)},
      {"per_device_eval_batch_size", i64(t.per_device_eval_batch_size)},
      {"gradient_accumulation_steps", i64(t.gradient_accumulation_steps)},
      {"weight_decay", f64(t.weight_decay)},
      {"adam_beta1", f64(t.adam_beta1)},
      {"adam_beta2", f64(t.adam_beta2)},
      {"adam_epsilon", f64(t.adam_epsilon)},
      {"max_grad_norm", f64(t.max_grad_norm)},
      {"lr_scheduler_type", str(t.lr_scheduler_type, false)},
      {"warmup_steps", i64(t.warmup_steps)},
      {"warmup_ratio", f64(t.warmup_ratio)},
      {"logging_strategy", str(t.logging_strategy, false)},
      {"logging_steps", i64(t.logging_steps)},
      {"save_strategy", str(t.save_strategy, false)},
      {"save_steps", i64(t.save_steps)},
      {"save_total_limit", i64_or_null(t.save_total_limit, -1)},
      {"eval_strategy", str(t.eval_strategy, false)},
      {"eval_steps", i64_or_null(t.eval_steps, -1)},
      {"seed", i64(t.seed)},
      {"predict_with_generate", boolean(t.predict_with_generate)},
      {"generation_config",
       [this, &t](const json& x, const Path& kp) {
         if (x.is_null() || x.is_object()) {
           t.generation_config = x;
           if (x.is_object()) generation_config(x, kp);
         } else {
           error(kp, "expected a map of generation options (e.g. {max_new_tokens: 512}), got " +
                         describe(x));
         }
       }},
      {"deepspeed",
       [this, &t](const json& x, const Path& kp) {
         if (x.is_object())
           error(kp, "an inline DeepSpeed config is not supported; give the path of its JSON file");
         else get_string(x, kp, t.deepspeed, true);
       }},
      {"dataloader_num_workers", i64(t.dataloader_num_workers)},
      {"gradient_checkpointing", boolean(t.gradient_checkpointing)},
      {"bf16", boolean(t.bf16)},
      {"fp16", boolean(t.fp16)},
      // HF's use_cpu; no_cuda is its deprecated name (HF warns and sets use_cpu from it).
      {"use_cpu", boolean(t.use_cpu)},
      {"no_cuda",
       [this, &t](const json& x, const Path& kp) {
         bool v = false;
         if (get_bool(x, kp, v) && v) {
           t.use_cpu = true;
           warn(kp, "no_cuda is deprecated in HF; it is read as use_cpu: true");
         }
       }},
      {"log_level", str(t.log_level, false)},
      {"report_to", [this, &t](const json& x, const Path& kp) { report_to(x, kp, t.report_to); }},
      {"logging_dir", str(t.logging_dir, true)},
      // HF's NEFTune (None = off): noise on the token embeddings while training.
      {"neftune_noise_alpha",
       [this, &t](const json& x, const Path& kp) {
         if (x.is_null()) t.neftune_noise_alpha = 0;
         else if (get_double(x, kp, t.neftune_noise_alpha) &&
                  (!std::isfinite(t.neftune_noise_alpha) || t.neftune_noise_alpha < 0))
           error(kp, "expected a number >= 0 or null (off), got " + describe(x));
       }},
  };
}

std::vector<std::string> Validator::training_arg_names() {
  TrainingArgs scratch;
  std::vector<std::string> known;
  for (const auto& f : training_fields(scratch)) known.push_back(f.first);
  known.push_back("evaluation_strategy");
  for (const auto& d : default_only_args()) known.push_back(d.key);
  known.insert(known.end(), kIgnoredTrainingArgs.begin(), kIgnoredTrainingArgs.end());
  return known;
}

void Validator::training_args(const json& v, const Path& p) {
  if (v.is_null()) return;  // `training_args:` with nothing under it = all defaults
  if (!v.is_object()) {
    error(p, "expected a map of Seq2SeqTrainingArguments options, got " + describe(v));
    return;
  }
  TrainingArgs& t = cfg_.training_args;
  const auto fields = training_fields(t);
  const std::vector<std::string> known = training_arg_names();

  std::set<std::string> given;
  std::string legacy_eval;
  for (const auto& key : keys_in_order(v, p)) {
    const json& x = v.at(key);
    const Path kp = p.key(key);
    given.insert(key);
    if (auto f = fields.find(key); f != fields.end()) {
      f->second(x, kp);
      continue;
    }
    if (key == "evaluation_strategy") {
      if (get_string(x, kp, legacy_eval, false))
        warn(kp, "deprecated HF name, read as eval_strategy");
      continue;
    }
    auto d = std::find_if(default_only_args().begin(), default_only_args().end(),
                          [&](const DefaultOnly& e) { return key == e.key; });
    if (d != default_only_args().end()) {
      if (!d->is_default(x)) error(kp, std::string(d->why) + " (got " + describe(x) + ")");
      continue;
    }
    if (std::find(kIgnoredTrainingArgs.begin(), kIgnoredTrainingArgs.end(), key) !=
        kIgnoredTrainingArgs.end()) {
      std::string why = "accepted but ignored (an HF option ftrun does not act on)";
      if (key == "resume_from_checkpoint") why += "; use the --resume flag";
      if (key == "local_rank") why += "; ranks come from the launcher";
      warn(kp, why);
      continue;
    }
    unknown_key(kp, key, known, " (not a Seq2SeqTrainingArguments option)");
  }

  if (!legacy_eval.empty()) {
    if (given.count("eval_strategy") && legacy_eval != t.eval_strategy) {
      error(p.key("evaluation_strategy"), "conflicts with eval_strategy: '" + legacy_eval +
                                              "' vs '" + t.eval_strategy + "'; keep one");
    } else {
      t.eval_strategy = legacy_eval;
    }
  }
  check_training_args(p);
}

// Value checks mirror what HF's TrainingArguments.__post_init__ rejects, plus the choices that
// ftrun narrows (schedulers, strategies).
void Validator::check_training_args(const Path& p) {
  TrainingArgs& t = cfg_.training_args;
  auto P = [&](const char* k) {
    // An alias given instead of the real key is reported where it was written.
    if (std::string(k) == "eval_strategy" && !origins_.has(p.key(k).pointer) &&
        origins_.has(p.key("evaluation_strategy").pointer))
      return p.key("evaluation_strategy");
    return p.key(k);
  };
  auto need = [&](bool ok, const char* k, const std::string& msg) {
    if (!ok) error(P(k), msg);
  };
  auto num = [](double d) {
    std::ostringstream s;
    s << d;
    return s.str();
  };

  need(t.learning_rate > 0 && std::isfinite(t.learning_rate), "learning_rate",
       "must be > 0, got " + num(t.learning_rate));
  need(t.per_device_train_batch_size >= 1, "per_device_train_batch_size",
       "must be >= 1, got " + std::to_string(t.per_device_train_batch_size));
  need(t.per_device_eval_batch_size >= 1, "per_device_eval_batch_size",
       "must be >= 1, got " + std::to_string(t.per_device_eval_batch_size));
  need(t.gradient_accumulation_steps >= 1, "gradient_accumulation_steps",
       "must be >= 1, got " + std::to_string(t.gradient_accumulation_steps));
  need(t.max_steps >= -1, "max_steps",
       "must be > 0, or -1 to train num_train_epochs, got " + std::to_string(t.max_steps));
  need(t.max_steps > 0 || t.num_train_epochs > 0, "num_train_epochs",
       "must be > 0 when max_steps is not set, got " + num(t.num_train_epochs));
  // The step count (epochs x steps per epoch) is an int64: 1e30 epochs used to wrap to
  // -9223372036854775808 steps and train nothing. 1e9 epochs keep it in range for any data set
  // below 9e9 samples, and are far beyond any real run.
  need(t.max_steps > 0 || (std::isfinite(t.num_train_epochs) && t.num_train_epochs <= 1e9), "num_train_epochs",
       "must be at most 1e9 (the step count, epochs x steps per epoch, is a 64-bit integer), got " +
           num(t.num_train_epochs));
  need(t.weight_decay >= 0, "weight_decay", "must be >= 0, got " + num(t.weight_decay));
  need(t.adam_beta1 >= 0 && t.adam_beta1 < 1, "adam_beta1",
       "must be in [0, 1), got " + num(t.adam_beta1));
  need(t.adam_beta2 >= 0 && t.adam_beta2 < 1, "adam_beta2",
       "must be in [0, 1), got " + num(t.adam_beta2));
  need(t.adam_epsilon >= 0, "adam_epsilon", "must be >= 0, got " + num(t.adam_epsilon));
  need(t.max_grad_norm >= 0, "max_grad_norm",
       "must be >= 0 (0 = no clipping), got " + num(t.max_grad_norm));
  need(t.warmup_steps >= 0, "warmup_steps", "must be >= 0, got " + std::to_string(t.warmup_steps));
  need(t.warmup_ratio >= 0 && t.warmup_ratio < 1, "warmup_ratio",
       "must be in [0, 1), got " + num(t.warmup_ratio));
  need(t.seed >= 0, "seed", "must be >= 0, got " + std::to_string(t.seed));
  need(t.dataloader_num_workers >= 0, "dataloader_num_workers",
       "must be >= 0, got " + std::to_string(t.dataloader_num_workers));
  need(!(t.bf16 && t.fp16), "fp16", "bf16 and fp16 are both true; choose one");
  // Never run fp16 silently as fp32, and without dynamic loss scaling fp16 gradients underflow.
  need(!t.fp16, "fp16",
       "fp16 mixed precision is not implemented (no dynamic loss scaling); use bf16: true, "
       "which ftrun supports, or leave both off for fp32");
  if (t.dataloader_num_workers > 0)
    warn(P("dataloader_num_workers"),
         "accepted but ignored: ftrun tokenizes the data up front into its token cache, so "
         "there is no loading for " + std::to_string(t.dataloader_num_workers) +
             " worker processes to do");

  check_choice(t.lr_scheduler_type, P("lr_scheduler_type"), kSchedulers, kHfOnlySchedulers);
  check_choice(t.logging_strategy, P("logging_strategy"), kStrategies);
  check_choice(t.save_strategy, P("save_strategy"), kStrategies, {"best"});
  check_choice(t.eval_strategy, P("eval_strategy"), kStrategies);
  check_choice(t.log_level, P("log_level"), kLogLevels);

  // HF treats 0 like unset for eval_steps and <= 0 like "keep all" for save_total_limit.
  if (t.eval_steps == 0) t.eval_steps = -1;
  need(t.eval_steps >= -1, "eval_steps",
       "must be >= 1 (or null = logging_steps), got " + std::to_string(t.eval_steps));
  if (t.save_total_limit <= 0) t.save_total_limit = -1;
  if (t.logging_strategy == "steps")
    need(t.logging_steps >= 1, "logging_steps",
         "must be >= 1 with logging_strategy 'steps', got " + std::to_string(t.logging_steps));
  if (t.save_strategy == "steps")
    need(t.save_steps >= 1, "save_steps",
         "must be >= 1 with save_strategy 'steps', got " + std::to_string(t.save_steps));
  if (t.eval_strategy == "steps" && t.eval_steps == -1)
    need(t.logging_steps >= 1, "eval_steps",
         "eval_strategy 'steps' needs eval_steps >= 1 (or logging_steps >= 1 to default to)");
}

int64_t edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment: Levenshtein plus adjacent transpositions, the commonest typo.
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<int64_t>> d(n + 1, std::vector<int64_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int64_t>(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const int64_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string closest_key(const std::string& key, const std::vector<std::string>& known) {
  const std::string k = lower(key);
  const int64_t limit = std::max<int64_t>(2, static_cast<int64_t>(key.size()) / 3);
  std::string best;
  int64_t best_d = std::numeric_limits<int64_t>::max();
  for (const auto& cand : known) {
    const int64_t d = edit_distance(k, lower(cand));
    if (d < best_d) {
      best_d = d;
      best = cand;
    }
  }
  // Rewriting every character of a short key is no suggestion at all.
  if (best_d > limit || best_d >= static_cast<int64_t>(key.size())) return "";
  return best;
}

json yaml12_scalar(const std::string& s) {
  static const std::regex dec("[-+]?[0-9]+");
  static const std::regex oct("0o[0-7]+");
  static const std::regex hex("0x[0-9a-fA-F]+");
  static const std::regex flt("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  static const std::regex inf("[-+]?\\.(inf|Inf|INF)");
  static const std::regex nan("\\.(nan|NaN|NAN)");
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  auto as_int = [&](const std::string& digits, int base) -> json {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(digits.c_str(), &end, base);
    if (errno == ERANGE) return std::strtod(s.c_str(), nullptr);  // too big for int64
    return static_cast<int64_t>(v);
  };
  if (std::regex_match(s, dec)) return as_int(s, 10);
  if (std::regex_match(s, oct)) return as_int(s.substr(2), 8);
  if (std::regex_match(s, hex)) return as_int(s.substr(2), 16);
  if (std::regex_match(s, flt)) return std::strtod(s.c_str(), nullptr);
  if (std::regex_match(s, inf))
    return s[0] == '-' ? -std::numeric_limits<double>::infinity()
                       : std::numeric_limits<double>::infinity();
  if (std::regex_match(s, nan)) return std::numeric_limits<double>::quiet_NaN();
  return s;
}

const std::vector<AcceptedKey>& accepted_keys() {
  static const std::vector<AcceptedKey> table = [] {
    // What the Validator dispatches on, by section: each must have exactly one class.
    std::vector<std::pair<std::string, std::string>> dispatched;
    for (const auto& k : kTopKeys) dispatched.push_back({"", k});
    for (const auto& k : kDataKeys) dispatched.push_back({"data_config", k});
    Config scratch;
    Origins no_origins;
    for (const auto& k : Validator("", no_origins, scratch).training_field_names())
      dispatched.push_back({"training_args", k});
    dispatched.push_back({"training_args", "evaluation_strategy"});
    for (const auto& d : default_only_args()) dispatched.push_back({"training_args", d.key});
    dispatched.push_back({"training_args.generation_config", "max_new_tokens"});
    dispatched.push_back({"peft_config", "peft_type"});
    dispatched.push_back({"peft_config", "task_type"});
    dispatched.push_back({"peft_config", "loraplus_lr_ratio"});
    dispatched.push_back({"peft_config", "loraplus_lr_embedding"});

    std::vector<AcceptedKey> out;
    std::set<std::pair<std::string, std::string>> seen;
    auto add = [&](AcceptedKey k) {
      if (!seen.insert({k.section, k.key}).second)
        throw std::logic_error("runtime/config.cpp: key " + k.section + "." + k.key +
                               " is classified twice");
      out.push_back(std::move(k));
    };
    for (const auto& c : classified_keys()) {
      if (std::find(dispatched.begin(), dispatched.end(),
                    std::make_pair(std::string(c.section), std::string(c.key))) == dispatched.end())
        throw std::logic_error(std::string("runtime/config.cpp: classified key ") + c.section +
                               "." + c.key + " is not read by the Validator");
      add({c.section, c.key, c.cls, c.example});
    }
    for (const auto& d : dispatched)
      if (!seen.count(d))
        throw std::logic_error("runtime/config.cpp: accepted key " + d.first + "." + d.second +
                               " has no class in classified_keys()");
    // The lists that only ever warn: any value shows it.
    for (const auto& k : kIgnoredTrainingArgs) add({"training_args", k, KeyClass::kWarned, true});
    for (const auto& m : kPeftMetadata)
      add({"peft_config", m.first, KeyClass::kWarned,
           m.first == "inference_mode" ? json(true) : json("x")});
    for (const auto& g : generation_defaults()) {
      const json& d = g.second;
      json ex = d.is_boolean() ? json(!d.get<bool>())
                : d.is_number_integer() ? json(d.get<int64_t>() + 1)
                : d.is_number() ? json(d.get<double>() + 0.5)
                : json(1);
      add({"training_args.generation_config", g.first, KeyClass::kWarned, ex});
    }
    return out;
  }();
  return table;
}

json config_to_json(const Config& c) {
  const TrainingArgs& t = c.training_args;
  return {
      {"path", c.path},
      {"model_dir", c.model_dir},
      {"data_dir", c.data_dir},
      {"chat_template", c.chat_template},
      {"adapter_name_or_path", c.adapter_name_or_path},
      {"zero_stage", c.zero_stage},
      {"zero3_keep_params", c.zero3_keep_params},
      {"torch_dtype", c.torch_dtype},
      {"packing", c.packing},
      {"attn_implementation", c.attn_implementation},
      {"device", c.device},
      {"comm_backend", c.comm_backend},
      {"collective_timeout", c.collective_timeout},
      {"nonfinite", c.nonfinite},
      {"data_config",
       {{"train_file", c.data_config.train_file},
        {"val_file", c.data_config.val_file},
        {"test_file", c.data_config.test_file},
        {"num_proc", c.data_config.num_proc}}},
      {"max_input_length", c.max_input_length},
      {"max_output_length", c.max_output_length},
      {"combine", c.combine},
      {"freezeV", c.freezeV},
      {"training_args",
       {{"output_dir", t.output_dir},
        {"overwrite_output_dir", t.overwrite_output_dir},
        {"max_steps", t.max_steps},
        {"num_train_epochs", t.num_train_epochs},
        {"learning_rate", t.learning_rate},
        {"per_device_train_batch_size", t.per_device_train_batch_size},
        {"per_device_eval_batch_size", t.per_device_eval_batch_size},
        {"gradient_accumulation_steps", t.gradient_accumulation_steps},
        {"weight_decay", t.weight_decay},
        {"adam_beta1", t.adam_beta1},
        {"adam_beta2", t.adam_beta2},
        {"adam_epsilon", t.adam_epsilon},
        {"max_grad_norm", t.max_grad_norm},
        {"lr_scheduler_type", t.lr_scheduler_type},
        {"warmup_steps", t.warmup_steps},
        {"warmup_ratio", t.warmup_ratio},
        {"logging_strategy", t.logging_strategy},
        {"logging_steps", t.logging_steps},
        {"save_strategy", t.save_strategy},
        {"save_steps", t.save_steps},
        {"save_total_limit", t.save_total_limit},
        {"eval_strategy", t.eval_strategy},
        {"eval_steps", t.eval_steps},
        {"seed", t.seed},
        {"predict_with_generate", t.predict_with_generate},
        {"generation_config", t.generation_config},
        {"deepspeed", t.deepspeed},
        {"dataloader_num_workers", t.dataloader_num_workers},
        {"gradient_checkpointing", t.gradient_checkpointing},
        {"bf16", t.bf16},
        {"fp16", t.fp16},
        {"use_cpu", t.use_cpu},
        {"log_level", t.log_level},
        {"report_to", t.report_to},
        {"logging_dir", t.logging_dir},
        {"neftune_noise_alpha", t.neftune_noise_alpha}}},
      {"peft_config", c.peft_config},
  };
}

Config load_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(yaml_path, ec))
    throw std::runtime_error(yaml_path + ": is a directory, expected a YAML config file");
  std::ifstream in(yaml_path);
  if (!in)
    throw std::runtime_error(yaml_path + ": cannot open config file (" + std::strerror(errno) +
                             ")");
  // Read up to the limit, also from a pipe or a device such as /dev/zero.
  std::string text;
  {
    char buf[1 << 16];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      text.append(buf, size_t(in.gcount()));
      if (text.size() > kMaxConfigBytes)
        throw std::runtime_error(yaml_path + ": longer than " + std::to_string(kMaxConfigBytes >> 20) +
                                 " MiB, the limit for a config file (a real one is a few KB; is it the right file?)");
    }
  }

  // Not YAML::LoadAll: Debian 12's yaml-cpp 0.7 loops forever, allocating, when a document's
  // first token starts no value (a stray ","; jbeder/yaml-cpp#1040; found by the config fuzz
  // target). The first document is loaded alone; a second one is looked for with at most two
  // parser steps, and a step that does not move is that bug's token.
  YAML::Node doc;
  int second_doc_line = -1;  // 0-based line of a second document, when there is one
  try {
    doc = YAML::Load(text);
    struct DocumentStarts : YAML::EventHandler {
      std::vector<YAML::Mark> marks;
      void OnDocumentStart(const YAML::Mark& m) override { marks.push_back(m); }
      void OnDocumentEnd() override {}
      void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
      void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
      void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
      void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                           YAML::EmitterStyle::value) override {}
      void OnSequenceEnd() override {}
      void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
      void OnMapEnd() override {}
    } starts;
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    for (int i = 0; i < 2 && parser.HandleNextDocument(starts); ++i) {
    }
    if (starts.marks.size() >= 2) {
      const YAML::Mark& second = starts.marks[1];
      if (second.pos == starts.marks[0].pos)
        throw std::runtime_error(yaml_path + ":" + std::to_string(second.line + 1) + ":" +
                                 std::to_string(second.column + 1) +
                                 ": YAML syntax error: a token that starts no value (a config is a mapping of keys)");
      second_doc_line = second.line;
    }
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own limit; its message is "bad file"
    std::string at = yaml_path;
    if (e.mark.line >= 0) at += ":" + std::to_string(e.mark.line + 1);
    throw std::runtime_error(at + ": nested deeper than " + std::to_string(kMaxConfigDepth) +
                             " levels (a config nests a few)");
  } catch (const YAML::Exception& e) {
    std::string at = yaml_path;
    if (e.mark.line >= 0)
      at += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw std::runtime_error(at + ": YAML syntax error: " + e.msg);
  }
  if (doc.IsNull())
    throw std::runtime_error(yaml_path + ": empty config file");
  if (second_doc_line >= 0)
    throw std::runtime_error(yaml_path + ":" + std::to_string(second_doc_line + 1) +
                             ": more than one YAML document; a config is a single document");

  Origins origins;
  Converter conv{yaml_path, origins, nullptr};
  json root = conv.convert(doc, Path{}, 1);
  for (const auto& expr : overrides) apply_override(root, expr, yaml_path, origins);

  Config cfg;
  cfg.path = yaml_path;
  Validator v(yaml_path, origins, cfg);
  v.run(root);
  if (!v.errors().empty()) throw std::runtime_error(join(v.errors(), "\n"));
  return cfg;
}

}  // namespace ftrun::runtime
