// `ftrun eval` (see eval_run.h).
#include "runtime/eval_run.h"

#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "io/file.h"
#include "io/output.h"
#include "models/model.h"
#include "peft/adapter.h"
#include "runtime/device.h"
#include "runtime/evaluate.h"
#include "runtime/generate.h"
#include "runtime/precision.h"
#include "runtime/run_setup.h"
#include "sharding/zero.h"

namespace fs = std::filesystem;

namespace ftrun::runtime {

namespace {

std::string split_key(const EvalRequest& req) { return req.split == "val" ? "data_config.val_file" : "data_config.test_file"; }

const std::string& split_file(const Config& cfg, const EvalRequest& req) {
  return req.split == "val" ? cfg.data_config.val_file : cfg.data_config.test_file;
}

// A predictions JSONL as write_predictions() writes it (every line an object of exactly
// prompt, reference and prediction), or an empty file: what --output may replace.
bool is_predictions_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::istringstream in(io::read_text_file(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || j.size() != 3 || !j.contains("prompt") || !j.contains("reference") || !j.contains("prediction"))
      return false;
  }
  return true;
}

}  // namespace

void prepare_eval_request(const Config& cfg, EvalRequest& req) {
  if (req.split != "val" && req.split != "test")
    throw std::runtime_error("--split must be val or test (got '" + req.split + "')");
  if (split_file(cfg, req).empty())
    throw std::runtime_error(cfg.path + ": " + split_key(req) + " is not set (the --split " + req.split + " data)");
  // Before any work: --output replaces only an earlier predictions file (never a user's file).
  if (!req.output.empty())
    io::check_replaceable(req.output, "predictions", "an ftrun predictions file", false, "delete it first",
                          is_predictions_file);
  if (req.checkpoint.empty()) req.checkpoint = cfg.training_args.output_dir;
  if (!peft::is_adapter_dir(req.checkpoint) && !fs::exists(fs::path(req.checkpoint) / "config.json"))
    throw std::runtime_error(req.checkpoint + ": no trained model here (neither adapter_config.json nor config.json); " +
                             "train first, or pass --checkpoint DIR");
}

nlohmann::json evaluate_checkpoint(const Config& cfg, EvalRequest req, comm::Comm& comm) {
  prepare_eval_request(cfg, req);
  const auto& args = cfg.training_args;
  const bool val = req.split == "val";
  const std::string key = split_key(req);
  const std::string& file = split_file(cfg, req);
  const int rank = comm.rank(), world = comm.world_size();

  // The run's precision, as training evaluated: torch_dtype for the base, and HF Trainer's
  // bf16 autocast around the loss and the generation when training_args.bf16 is set.
  auto inf = load_for_inference(req.checkpoint, cfg.model_dir, cfg.chat_template, nullptr, cfg.torch_dtype,
                                resolve_device(cfg));
  AutocastGuard autocast(args.bf16);
  if (rank == 0 && (args.bf16 || inf.model->parameters().front().scalar_type() != at::kFloat))
    std::cerr << "ftrun: evaluating with base weights " << models::hf_dtype_name(inf.model->parameters().front().scalar_type())
              << (args.bf16 ? " under bf16 autocast" : "") << "\n";
  const auto setup = setup_run(cfg, world, inf);
  const bool sharded = world > 1 && setup.zero_stage == 3;
  std::unique_ptr<sharding::ZeroEngine> engine;
  if (sharded) {
    int64_t full_bytes = 0;
    for (const auto& p : inf.model->parameters()) full_bytes += p.numel() * int64_t(p.element_size());
    sharding::ZeroConfig zc;
    zc.stage = 3;
    // Nothing to train: every weight is a frozen one, sharded with its unit. The engine only
    // borrows the comm (it outlives the engine here).
    std::shared_ptr<comm::Comm> borrowed(&comm, [](comm::Comm*) {});
    engine = std::make_unique<sharding::ZeroEngine>(*inf.model, std::vector<at::Tensor>{}, std::vector<bool>{},
                                                    borrowed, zc);
    if (rank == 0)
      std::cerr << "ftrun: ZeRO-3 evaluation: rank 0 keeps " << engine->memory().param_bytes << " of " << full_bytes
                << " bytes of weights (sharded over " << world << " ranks)\n";
  }
  const auto rows = setup.rows(file, key);
  // Loss over the split's label tokens (each rank its share of the samples).
  const auto samples = setup.encode(file, comm);
  auto [loss_sum, loss_count] =
      distributed_loss_sum_and_count(*inf.model, samples, args.per_device_eval_batch_size, setup.pad_id, comm);

  auto po = setup.predict_options(world, req.max_new_tokens);
  if (req.batch_size > 0) po.batch_size = req.batch_size;
  auto res = predict(*inf.model, rows, *inf.tokenizer, po, comm);
  nlohmann::json m;
  if (rank == 0) {
    if (req.output.empty()) {
      fs::create_directories(args.output_dir);
      req.output = (fs::path(args.output_dir) / ("predictions_" + req.split + ".jsonl")).string();
    }
    write_predictions(req.output, rows, res.predictions);
    // HF's names: eval_* for the validation split (as in training's records), test_* for test.
    const std::string prefix = val ? "eval" : "test";
    m[prefix + "_loss"] = loss_count > 0 ? loss_sum / double(loss_count) : std::nan("");
    for (const auto& kv : res.scores) m[prefix + "_" + kv.first] = kv.second;
    m[prefix + "_samples"] = rows.size();
    m[prefix + "_runtime"] = res.seconds;
    m[prefix + "_tokens_per_second"] = res.seconds > 0 ? double(res.new_tokens) / res.seconds : 0.0;
    // Also to a file, as HF's trainer.save_metrics(split) does ({eval,test}_results.json).
    fs::create_directories(args.output_dir);
    const auto results = fs::path(args.output_dir) / (prefix + "_results.json");
    io::write_json_atomic(results, m);
    std::cerr << "ftrun: " << rows.size() << " rows of " << file << " on " << world << " rank(s) from "
              << req.checkpoint << "; predictions in " << req.output << ", metrics in " << results.string() << "\n";
  }
  comm.barrier();
  return m;
}

}  // namespace ftrun::runtime
