// The run configuration: the GLM-4 fine-tune demo's YAML schema (configs/lora.yaml,
// ptuning_v2.yaml, sft.yaml; see shared/reference/glm4-demo.md sec. 2) plus a few ftrun keys.
//
// YAML is read as YAML 1.2 (5e-4 is a float). training_args keys mean what they mean in HF
// Seq2SeqTrainingArguments, with its defaults. An unknown key anywhere is an error naming the
// file, line, key and the closest known key; a wrong type or value names the key and what is
// expected. Keys that HF knows but ftrun does not act on are accepted with a warning.
//
// No setting is silently ignored (issue 13): every key the reader accepts is in exactly one
// class of accepted_keys(): acted on (read into a Config field that the run uses), warned
// about (a warning names it when it is given a value that would change something), or
// refused (any value but HF's default is an error). config_test enumerates the table.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ftrun::runtime {

struct DataConfig {
  std::string train_file, val_file, test_file;  // resolved against data_dir; "" = none
  int64_t num_proc = 1;  // warned when > 1: tokenizing is one pass into the token cache
};

struct TrainingArgs {
  std::string output_dir = "./output";
  bool overwrite_output_dir = false;  // HF's: write into an output_dir that is not ftrun's own
  int64_t max_steps = -1;           // > 0 overrides num_train_epochs
  double num_train_epochs = 3.0;
  double learning_rate = 5e-5;
  int64_t per_device_train_batch_size = 8;
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  std::string lr_scheduler_type = "linear";  // linear, constant, constant_with_warmup, cosine
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  std::string logging_strategy = "steps";  // steps, epoch, no
  int64_t logging_steps = 500;
  std::string save_strategy = "steps";     // steps, epoch, no
  int64_t save_steps = 500;
  int64_t save_total_limit = -1;           // -1 = keep all
  std::string eval_strategy = "no";        // steps, epoch, no
  int64_t eval_steps = -1;                 // -1 = logging_steps (HF)
  int64_t seed = 42;
  bool predict_with_generate = false;
  nlohmann::json generation_config;        // e.g. {"max_new_tokens": 512}
  std::string deepspeed;                   // path to a DeepSpeed JSON, "" = none
  int64_t dataloader_num_workers = 0;      // warned when > 0: data is tokenized up front
  bool gradient_checkpointing = false;
  bool bf16 = false, fp16 = false;         // fp16: true is refused (no loss scaling)
  bool use_cpu = false;                    // HF's use_cpu (and its deprecated no_cuda): train on the CPU
  std::string log_level = "passive";       // ftrun's own log lines on rank 0 (runtime/log.h)
  // HF's integrations, resolved as HF resolves them: "all" (HF 4.x's default) = every one
  // ftrun has = tensorboard (runtime/tensorboard.h); "none" = none.
  std::vector<std::string> report_to = {"tensorboard"};
  std::string logging_dir;                 // "" = output_dir/runs/<date>_<host>, as HF
  // NEFTune (HF's key; None = 0 = off): uniform noise in [-m, m], m = alpha / sqrt(T * H),
  // on the token embeddings of every training forward (runtime/trainer.cpp).
  double neftune_noise_alpha = 0.0;
  // LoRA+ (not an HF key: resolved from peft_config.loraplus_lr_ratio or the top-level
  // LLaMA-Factory spelling; 0 = off): LoRA's B matrices train at learning_rate * ratio.
  double loraplus_lr_ratio = 0.0;
};

struct Config {
  std::string path;            // the YAML file
  // ftrun keys (the demo takes these as CLI arguments instead)
  std::string model_dir;       // base model directory (HF layout)
  std::string data_dir;        // data files are relative to it; "" = the current directory
  std::string chat_template;   // "" = chosen from the model's config
  std::string adapter_name_or_path;  // an existing PEFT adapter to start from ("" = fresh)
  int64_t zero_stage = -1;     // -1 = from training_args.deepspeed (else 0)
  bool zero3_keep_params = false;  // stage 3: keep gathered units instead of recomputing
  // The dtype the model is held and computed in (HF's from_pretrained torch_dtype): auto =
  // config.json's torch_dtype; bfloat16, float16 or float32 (runtime/precision.h).
  std::string torch_dtype = "auto";
  std::string comm_backend = "auto";  // auto (gloo; mpi collectives only when asked), gloo, mpi, nccl
  double collective_timeout = 600;    // seconds before a collective that never completes fails
  // Several samples per row of max_input_length + max_output_length tokens, block-diagonal
  // attention, positions restarting per sample (LLaMA-Factory's neat_packing; data/packing.h).
  bool packing = false;
  // HF's attn_implementation (models/attention.h): auto (sdpa on libtorch 2.x, eager on 1.13),
  // eager (transformers' eager math, bit-exact with it) or sdpa.
  std::string attn_implementation = "auto";
  // Where the model, its optimizer state and the batches live (runtime/device.h): auto (GPU
  // cuda:LOCAL_RANK when this build has CUDA and a GPU is visible, as HF Trainer; else the
  // CPU), cpu, or cuda (a GPU is required: an error without one).
  std::string device = "auto";
  // A step whose loss or grad norm is NaN/inf (issue 16): "stop" (the default) ends training
  // with an error naming the step and the first module that produced it; "skip" drops the
  // update (DeepSpeed's fp16 overflow rule: no optimizer or LR step, grads zeroed), warns,
  // and counts it in metrics.jsonl.
  std::string nonfinite = "stop";
  // the demo's keys
  DataConfig data_config;
  int64_t max_input_length = 0;
  int64_t max_output_length = 0;
  bool combine = true;
  bool freezeV = true;
  TrainingArgs training_args;
  nlohmann::json peft_config;  // null = full fine-tuning; else as written (peft_type, r, ...)
  std::vector<std::string> warnings;  // accepted-but-ignored keys etc., for the log
};

// How the reader treats an accepted key (see the header comment).
enum class KeyClass { kActed, kWarned, kRefused };

struct AcceptedKey {
  std::string section;  // "" (top level), "data_config", "training_args",
                        // "training_args.generation_config" or "peft_config"
  std::string key;
  KeyClass cls;
  // A value that shows the class: for an acted key it changes the parsed Config, for a warned
  // key it draws a warning naming the key, for a refused key it is an error naming the key.
  nlohmann::json example;
};

// Every key the reader accepts, each once. peft_config lists only the keys the reader itself
// handles (peft_type and the metadata every PEFT config carries); the strategy's own options
// (r, lora_alpha, num_virtual_tokens, ...) are checked by its plug-in in peft/, which refuses
// the ones it does not know.
const std::vector<AcceptedKey>& accepted_keys();

// Every field of a parsed Config (warnings aside) as JSON: for `log_level: debug` and for
// tests that check a key really reaches the Config.
nlohmann::json config_to_json(const Config& cfg);

// Reads the YAML file, applies `--set a.b=c` overrides (value parsed as YAML), validates.
Config load_config(const std::string& yaml_path, const std::vector<std::string>& overrides = {});

// The known key closest to `key` by edit distance ("" when nothing is reasonably close).
std::string closest_key(const std::string& key, const std::vector<std::string>& known);

// A plain (unquoted) YAML scalar typed by the YAML 1.2 core schema, as ruamel.yaml reads the
// demo's configs: null/~/"" -> null, true/True/TRUE/false/... -> bool, 42/0x2A/0o52 -> integer,
// 5e-4/1.0e9/.5/.inf/.nan -> float, anything else (yes, on, 1_000) -> string.
nlohmann::json yaml12_scalar(const std::string& text);

}  // namespace ftrun::runtime
