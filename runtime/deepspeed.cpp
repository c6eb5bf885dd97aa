// DeepSpeed config reading (see deepspeed.h).
#include "runtime/deepspeed.h"

#include "io/file.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <stdexcept>

namespace ftrun::runtime {
namespace {

bool is_auto(const nlohmann::json& v) { return v.is_string() && v.get<std::string>() == "auto"; }

// Keys DeepSpeed defines that change nothing in ftrun's math (communication tuning, logging).
const std::set<std::string> kTuningKeys = {
    "zero_optimization.allgather_partitions", "zero_optimization.allgather_bucket_size",
    "zero_optimization.overlap_comm", "zero_optimization.reduce_scatter",
    "zero_optimization.reduce_bucket_size", "zero_optimization.contiguous_gradients",
    "zero_optimization.sub_group_size", "zero_optimization.stage3_prefetch_bucket_size",
    "zero_optimization.stage3_param_persistence_threshold", "zero_optimization.stage3_max_live_parameters",
    "zero_optimization.stage3_max_reuse_distance", "zero_optimization.stage3_gather_16bit_weights_on_model_save",
    "steps_per_print", "wall_clock_breakdown", "zero_allow_untested_optimizer",
    "fp16.loss_scale", "fp16.loss_scale_window", "fp16.initial_scale_power", "fp16.hysteresis",
    "fp16.min_loss_scale"};

}  // namespace

DeepSpeedSettings read_deepspeed(const std::string& path, const TrainingArgs& args, int world) {
  const nlohmann::json j = io::read_json_file(path, "DeepSpeed config (training_args.deepspeed)");
  if (!j.is_object()) throw std::runtime_error(path + ": expected a JSON object");
  DeepSpeedSettings ds;
  ds.gradient_clipping = args.max_grad_norm;
  std::vector<std::string> ignored;
  auto fail = [&](const std::string& key, const std::string& what) {
    throw std::runtime_error(path + ": " + key + ": " + what);
  };
  // A concrete value must agree with training_args, as HF's auto-filling insists.
  auto must_match = [&](const std::string& key, const nlohmann::json& v, double want, const std::string& arg) {
    if (is_auto(v)) return;
    if (!v.is_number()) fail(key, "expected a number or \"auto\", got " + v.dump());
    if (std::abs(v.get<double>() - want) > 1e-12 * std::max(1.0, std::abs(want)))
      fail(key, v.dump() + " contradicts training_args." + arg + " = " + nlohmann::json(want).dump() +
                    " (use \"auto\" or the same value)");
  };
  std::string at_key;  // for a value of an unexpected JSON type below (nlohmann's type_error)
  try {
    for (const auto& kv : j.items()) {
      const auto& k = kv.key();
      const auto& v = kv.value();
      at_key = k;
      if (k == "zero_optimization") {
        if (!v.is_object()) fail(k, "expected an object");
        for (const auto& z : v.items()) {
          auto full = "zero_optimization." + z.key();
          if (z.key() == "stage") {
            // Compared as int64: get<int>() would truncate 4294967298 to 2 (fuzz find).
            if (!z.value().is_number_integer() || z.value().get<int64_t>() < 0 || z.value().get<int64_t>() > 3)
              fail(full, "expected 0, 1, 2 or 3, got " + z.value().dump());
            ds.zero_stage = int(z.value().get<int64_t>());
          } else if (z.key() == "offload_optimizer" || z.key() == "offload_param") {
            if (!z.value().is_null() && z.value().value("device", "none") != "none")
              fail(full, "CPU/NVMe offload is not supported by ftrun");
          } else {
            ignored.push_back(full);
          }
        }
      } else if (k == "train_micro_batch_size_per_gpu") {
        must_match(k, v, double(args.per_device_train_batch_size), "per_device_train_batch_size");
      } else if (k == "gradient_accumulation_steps") {
        must_match(k, v, double(args.gradient_accumulation_steps), "gradient_accumulation_steps");
      } else if (k == "train_batch_size") {
        must_match(k, v, double(world * args.per_device_train_batch_size * args.gradient_accumulation_steps),
                   "per_device_train_batch_size x gradient_accumulation_steps x world size");
      } else if (k == "gradient_clipping") {
        must_match(k, v, args.max_grad_norm, "max_grad_norm");
      } else if (k == "bf16" || k == "fp16") {
        if (!v.is_object()) fail(k, "expected an object");
        for (const auto& f : v.items()) {
          if (f.key() == "enabled") {
            // HF fills "auto" from training_args and refuses a concrete value that differs
            // (fill_match); bf16 then means ftrun's bf16 (runtime/precision.h); fp16 is refused.
            const bool want = k == "bf16" ? args.bf16 : args.fp16;
            if (!is_auto(f.value())) {
              if (!f.value().is_boolean()) fail(k + ".enabled", "expected true, false or \"auto\", got " + f.value().dump());
              if (f.value().get<bool>() != want)
                fail(k + ".enabled", f.value().dump() + " contradicts training_args." + k + " = " +
                                         (want ? "true" : "false") + " (use \"auto\" or the same value)");
            }
            if (k == "fp16" && want)
              fail("fp16.enabled", "fp16 with dynamic loss scaling is not implemented; use bf16 instead");
          } else {
            ignored.push_back(k + "." + f.key());
          }
        }
      } else if (k == "optimizer") {
        if (!v.is_object() || v.value("type", "") != "AdamW")
          fail(k, "only {\"type\": \"AdamW\"} is supported (it is HF's adamw_torch)");
        if (v.contains("params")) {
          const auto& p = v["params"];
          if (p.contains("lr")) must_match("optimizer.params.lr", p["lr"], args.learning_rate, "learning_rate");
          if (p.contains("eps")) must_match("optimizer.params.eps", p["eps"], args.adam_epsilon, "adam_epsilon");
          if (p.contains("weight_decay"))
            must_match("optimizer.params.weight_decay", p["weight_decay"], args.weight_decay, "weight_decay");
          if (p.contains("betas") && !is_auto(p["betas"])) {
            if (!p["betas"].is_array() || p["betas"].size() != 2) fail("optimizer.params.betas", "expected [b1, b2] or \"auto\"");
            must_match("optimizer.params.betas[0]", p["betas"][0], args.adam_beta1, "adam_beta1");
            must_match("optimizer.params.betas[1]", p["betas"][1], args.adam_beta2, "adam_beta2");
          }
        }
      } else if (k == "scheduler") {
        fail(k, "DeepSpeed schedulers are not supported; use training_args.lr_scheduler_type");
      } else {
        ignored.push_back(k);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail(at_key, "unexpected value: " + io::json_error_text(e) + " (expected DeepSpeed's JSON schema)");
  }
  std::string tuning, unknown;
  for (const auto& k : ignored) {
    auto& dst = kTuningKeys.count(k) ? tuning : unknown;
    dst += (dst.empty() ? "" : ", ") + k;
  }
  if (!tuning.empty()) ds.warnings.push_back(path + ": communication tuning keys have no effect in ftrun: " + tuning);
  if (!unknown.empty()) ds.warnings.push_back(path + ": unsupported DeepSpeed keys ignored: " + unknown);
  return ds;
}

int zero_stage_of(const Config& cfg, int world, std::vector<std::string>* warnings) {
  if (cfg.zero_stage >= 0) return int(cfg.zero_stage);
  if (cfg.training_args.deepspeed.empty()) return 0;
  auto ds = read_deepspeed(cfg.training_args.deepspeed, cfg.training_args, world);
  if (warnings) warnings->insert(warnings->end(), ds.warnings.begin(), ds.warnings.end());
  return ds.zero_stage;
}

}  // namespace ftrun::runtime
