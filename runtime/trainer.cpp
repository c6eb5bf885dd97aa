// The training loop and the run around it (see trainer.h).
#include "runtime/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <csignal>
#include <iostream>
#include <thread>

#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/token_cache.h"
#include "data/tokenizer.h"
#include "models/safetensors.h"
#include "runtime/deepspeed.h"
#include "runtime/evaluate.h"
#include "runtime/checkpoint.h"
#include "runtime/metrics.h"

namespace fs = std::filesystem;

namespace ftrun::runtime {

Stepper::Stepper(models::CausalLM& model, const peft::NamedTensors& trainable,
                 const TrainingArgs& args, int64_t total_steps, std::shared_ptr<sharding::Comm> comm,
                 int zero_stage, bool keep_params)
    : model_(model), comm_(comm ? std::move(comm) : sharding::make_single_comm()),
      max_grad_norm_(args.max_grad_norm) {
  std::vector<at::Tensor> params;
  std::vector<bool> decay;
  for (const auto& kv : trainable) {
    params.push_back(kv.second);
    decay.push_back(sharding::decays(kv.first));
  }
  sharding::ZeroConfig zc;
  zc.stage = zero_stage;
  zc.keep_params = keep_params;
  zc.adam = {args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay};
  engine_ = std::make_unique<sharding::ZeroEngine>(model, params, decay, comm_, zc);
  schedule_.type = args.lr_scheduler_type;
  schedule_.total_steps = total_steps;
  schedule_.warmup_steps = warmup_steps_for(args.warmup_steps, args.warmup_ratio, total_steps);
  schedule_.base_lr = args.learning_rate;
}

StepStats Stepper::step(const std::vector<data::Batch>& micro_batches) {
  StepStats s;
  int64_t local_labels = 0, local_inputs = 0;
  for (const auto& b : micro_batches) {
    local_labels += b.num_label_tokens;
    local_inputs += b.attention_mask.sum().item<int64_t>();
  }
  // Token counts of the whole global batch (exact in float64 far beyond any batch size).
  auto counts = torch::tensor({double(local_labels), double(local_inputs)}, torch::kDouble);
  if (comm_->world_size() > 1) comm_->all_reduce_sum(counts);
  s.label_tokens = int64_t(counts[0].item<double>());
  s.input_tokens = int64_t(counts[1].item<double>());
  model_.train();
  engine_->begin();
  double loss_local = 0;
  if (s.label_tokens > 0) {
    for (const auto& b : micro_batches) {
      auto logits = model_.forward(b.input_ids, b.attention_mask);
      auto loss = models::causal_lm_loss_sum(logits, b.labels) / double(s.label_tokens);
      engine_->backward(loss);
      loss_local += loss.item<double>();
    }
  }
  auto loss_t = torch::tensor({loss_local}, torch::kDouble);
  if (comm_->world_size() > 1) comm_->all_reduce_sum(loss_t);
  s.loss = loss_t.item<double>();
  s.grad_norm = engine_->reduce_and_clip(max_grad_norm_);
  s.lr = schedule_.lr(engine_->steps());
  engine_->step(s.lr);
  return s;
}

double evaluate_loss(models::CausalLM& model, const std::vector<data::Sample>& samples,
                     int64_t batch_size, int64_t pad_id) {
  auto [sum, count] = loss_sum_and_count(model, samples, batch_size, pad_id);
  return count > 0 ? sum / double(count) : std::nan("");
}

namespace {

}  // namespace

TrainSummary train(const Config& cfg, bool verbose, std::shared_ptr<sharding::Comm> comm, const std::string& resume) {
  const auto& args = cfg.training_args;
  if (!comm) comm = sharding::make_single_comm();
  const int rank = comm->rank(), world = comm->world_size();
  verbose = verbose && rank == 0;
  if (cfg.model_dir.empty())
    throw std::runtime_error(cfg.path + ": model_dir is not set (add `model_dir:` to the YAML, "
                                        "or pass --model-dir / --set model_dir=...)");
  std::vector<std::string> warnings = cfg.warnings;
  const int stage = zero_stage_of(cfg, world, &warnings);
  for (const auto& w : warnings)
    if (verbose) std::cerr << "warning: " << w << "\n";

  torch::manual_seed(uint64_t(args.seed));
  auto mc = models::load_model_config(cfg.model_dir);
  auto tok = data::load_tokenizer(cfg.model_dir);
  auto tmpl = data::make_template(cfg.chat_template.empty() ? data::template_for_model(mc.model_type, *tok)
                                                              : cfg.chat_template);
  // Tokenized data is cached on disk; rank 0 builds it, the others then read its file.
  data::EncodeOptions enc{cfg.max_input_length, cfg.max_output_length, cfg.combine};
  const auto cache_dir = data::default_cache_dir(args.output_dir);
  auto encode = [&](const std::string& file) {
    std::vector<data::Sample> out;
    if (rank == 0) out = data::load_or_build(file, *tmpl, *tok, enc, cache_dir);
    comm->barrier();
    if (rank != 0) out = data::load_or_build(file, *tmpl, *tok, enc, cache_dir);
    return out;
  };
  auto train_samples = encode(cfg.data_config.train_file);
  std::vector<data::Sample> val_samples;
  bool do_eval = args.eval_strategy != "no" && !cfg.data_config.val_file.empty();
  if (do_eval) val_samples = encode(cfg.data_config.val_file);
  int64_t pad_id = mc.pad_token_id >= 0 ? mc.pad_token_id : (mc.eos_token_id.empty() ? 0 : mc.eos_token_id[0]);
  // trainer.predict(test) after training: test_loss always; with predict_with_generate the val
  // rows are also generated at each evaluation and the test rows into predictions.jsonl. Every
  // file is read now so a bad one fails before training.
  const bool do_test = !cfg.data_config.test_file.empty();
  auto rows_of = [&](const std::string& file, const char* key) {
    try {
      return prediction_rows(file, *tmpl, *tok, cfg.max_input_length, cfg.combine);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("data_config.") + key + ": " + e.what());
    }
  };
  std::vector<PredictRow> val_rows, test_rows;
  if (do_eval && args.predict_with_generate) val_rows = rows_of(cfg.data_config.val_file, "val_file");
  if (do_test && args.predict_with_generate) test_rows = rows_of(cfg.data_config.test_file, "test_file");
  std::vector<data::Sample> test_samples;
  if (do_test) test_samples = encode(cfg.data_config.test_file);
  PredictOptions predict_opts;
  if (!val_rows.empty() || !test_rows.empty()) predict_opts.generate.max_new_tokens = eval_max_new_tokens(args.generation_config);
  predict_opts.generate.stop_ids = eval_stop_ids(*tmpl, *tok, mc);
  predict_opts.batch_size = args.per_device_eval_batch_size;
  predict_opts.synced = stage == 3;  // every forward is collective: ranks must keep in step

  auto model = models::load_pretrained(cfg.model_dir);
  auto strategy = peft::make_strategy(cfg.peft_config);
  strategy->apply(*model);
  std::string resume_message;
  auto resume_dir = resolve_resume(resume, args.output_dir, &resume_message);
  if (verbose && !resume_message.empty()) std::printf("ftrun: %s\n", resume_message.c_str());
  nlohmann::json resume_state;
  if (resume_dir) {
    std::ifstream in(*resume_dir / "trainer_state.json");
    if (!in) throw std::runtime_error((*resume_dir / "trainer_state.json").string() + ": missing");
    in >> resume_state;
    for (const auto& note : check_resume_compatible(cfg, resume_state, mc.raw))
      if (verbose) std::printf("ftrun: resuming with a changed setting: %s\n", note.c_str());
    // Weights before the engine takes them over (it packs their current values).
    strategy->load(resume_dir->string());
  } else if (!cfg.adapter_name_or_path.empty()) {
    // Continue training an existing adapter (PEFT's own, or an earlier ftrun output).
    strategy->load(cfg.adapter_name_or_path);
    if (verbose) std::printf("ftrun: starting from the adapter in %s\n", cfg.adapter_name_or_path.c_str());
  }
  auto trainable = strategy->trainable();
  int64_t n_train = 0, n_total = 0;
  for (const auto& kv : trainable) n_train += kv.second.numel();
  for (const auto& p : model->parameters()) n_total += p.numel();

  // The global batch of a micro-step is world x per-device batch; rank r takes the r-th
  // slice of the global sample stream, so any world size sees the same global batches.
  const int64_t bs = args.per_device_train_batch_size, accum = args.gradient_accumulation_steps;
  const int64_t global_bs = bs * world;
  const int64_t n = int64_t(train_samples.size());
  const int64_t batches_per_epoch = (n + global_bs - 1) / global_bs;
  const int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / accum);
  const int64_t total_steps = args.max_steps > 0
                                  ? args.max_steps
                                  : int64_t(std::ceil(args.num_train_epochs * double(steps_per_epoch)));
  Stepper stepper(*model, trainable, args, total_steps, comm, stage, cfg.zero3_keep_params);
  int64_t start_step = 0;
  if (resume_dir) {
    start_step = resume_state.at("global_step").get<int64_t>();
    load_rank_state(*resume_dir, stepper.engine(), start_step, rank);
    if (verbose)
      std::printf("ftrun: resumed from %s (step %lld, written by %d rank(s) at ZeRO stage %d)\n", resume_dir->c_str(),
                  (long long)start_step, resume_state.value("world_size", 1), resume_state.value("zero_stage", 0));
  }

  std::unique_ptr<MetricsLog> metrics;
  if (rank == 0) {
    fs::create_directories(args.output_dir);
    metrics = std::make_unique<MetricsLog>((fs::path(args.output_dir) / "metrics.jsonl").string());
  }
  Progress progress(total_steps, verbose);
  if (verbose)
    std::printf("ftrun: %s | %d rank(s), ZeRO stage %d | %lld train samples | %lld steps | trainable %lld of %lld params (%.4f%%)\n",
                strategy->name().c_str(), world, stage, (long long)n, (long long)total_steps, (long long)n_train,
                (long long)n_total, 100.0 * double(n_train) / double(n_total));

  TrainSummary summary;
  summary.output_dir = args.output_dir;
  nlohmann::json history = resume_dir ? resume_state.value("log_history", nlohmann::json::array())
                                      : nlohmann::json::array();
  // The global sample stream: epoch e visits epoch_order(n, seed, e).
  int64_t position = resume_dir ? resume_state.at("position").get<int64_t>() : 0, order_epoch = 0;
  auto order = data::epoch_order(n, uint64_t(args.seed), 0);
  auto sample_at = [&](int64_t pos) -> const data::Sample* {
    if (pos / n != order_epoch) {
      order_epoch = pos / n;
      order = data::epoch_order(n, uint64_t(args.seed), order_epoch);
    }
    return &train_samples[size_t(order[size_t(pos % n)])];
  };
  auto record = [&](const nlohmann::json& rec) {
    if (rank != 0) return;
    metrics->write(rec);
    history.push_back(rec);
    progress.log(rec);
  };
  auto save = [&](bool checkpoint, int64_t step) {
    // Every rank takes part (stage 3 gathers; each rank writes its optimizer shard); rank 0
    // writes the weights and finishes the checkpoint once all ranks are done.
    fs::path dir = checkpoint ? checkpoint_tmp_dir(args.output_dir, step) : fs::path(args.output_dir);
    if (rank == 0) {
      if (checkpoint) fs::remove_all(dir);
      fs::create_directories(dir);
    }
    comm->barrier();
    if (strategy->name() == "FULL" && stage == 3) {
      save_model_streaming(stepper.engine(), *model, dir, rank == 0);
    } else {
      stepper.engine().with_full_trainable([&] {
        if (rank == 0) strategy->save(dir.string(), cfg.model_dir);
      });
    }
    if (checkpoint) {
      save_rank_state(dir, stepper.engine(), rank);
      comm->barrier();
      // Fault injection for the crash-safety test: die between writing and COMPLETE.
      const char* kill_at = std::getenv("FTRUN_TEST_KILL_IN_SAVE");
      if (kill_at && std::to_string(step) == kill_at) std::raise(SIGKILL);
      if (rank == 0) {
        nlohmann::json ta = {{"max_steps", args.max_steps}, {"learning_rate", args.learning_rate},
                             {"per_device_train_batch_size", args.per_device_train_batch_size},
                             {"gradient_accumulation_steps", args.gradient_accumulation_steps}, {"seed", args.seed}};
        finish_checkpoint(cfg, dir, step,
                          {{"global_step", step}, {"position", position}, {"epoch", double(position) / double(n)},
                           {"log_history", history}, {"world_size", world}, {"zero_stage", stage},
                           {"strategy", strategy->name()}, {"peft_config", cfg.peft_config},
                           {"model_config", mc.raw}, {"training_args", ta}, {"seed", args.seed}});
      }
    } else if (rank == 0) {
      copy_tokenizer(cfg.model_dir, dir);
    }
    comm->barrier();
  };
  // Fault injection for the launcher's --progress-timeout test: after this step the last rank
  // stays alive (its heartbeat thread goes on) but makes no more progress; the others wait for
  // it in a collective.
  const char* stall_env = std::getenv("FTRUN_TEST_STALL_AFTER_STEP");
  const int64_t stall_after = stall_env ? std::atoll(stall_env) : -1;
  double window_loss = 0;
  int64_t window_steps = 0, window_tokens = 0;
  auto window_start = std::chrono::steady_clock::now();

  for (int64_t step = start_step; step < total_steps; ++step) {
    std::vector<data::Batch> micro;
    for (int64_t a = 0; a < accum; ++a) {
      std::vector<const data::Sample*> group;
      for (int64_t k = 0; k < bs; ++k) group.push_back(sample_at(position + rank * bs + k));
      position += global_bs;
      micro.push_back(data::collate(group, pad_id));
    }
    auto st = stepper.step(micro);
    summary.steps.push_back(st);
    window_loss += st.loss;
    window_steps += 1;
    window_tokens += st.input_tokens;
    int64_t done = step + 1;
    double epoch_f = double(position) / double(n);
    bool log_now = args.logging_strategy == "steps" && args.logging_steps > 0 && done % args.logging_steps == 0;
    if (args.logging_strategy == "epoch" && done % steps_per_epoch == 0) log_now = true;
    if (log_now || (done == total_steps && args.logging_strategy != "no" && window_steps > 0)) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      record({{"step", done},
              {"epoch", epoch_f},
              {"loss", window_loss / double(window_steps)},
              {"learning_rate", stepper.schedule().lr(done)},
              {"grad_norm", st.grad_norm},
              {"tokens_per_second", secs > 0 ? double(window_tokens) / secs : 0.0}});
      window_loss = 0;
      window_steps = 0;
      window_tokens = 0;
      window_start = std::chrono::steady_clock::now();
    }
    int64_t eval_every = args.eval_steps > 0 ? args.eval_steps : args.logging_steps;
    bool eval_now = do_eval && ((args.eval_strategy == "steps" && eval_every > 0 && done % eval_every == 0) ||
                                (args.eval_strategy == "epoch" && done % steps_per_epoch == 0));
    if (eval_now) {
      // Rows split across ranks, in lock-step (under ZeRO-3 each forward is collective).
      auto [el_sum, el_count] =
          distributed_loss_sum_and_count(*model, val_samples, args.per_device_eval_batch_size, pad_id, *comm);
      double el = el_count > 0 ? el_sum / double(el_count) : std::nan("");
      nlohmann::json rec = {{"step", done}, {"epoch", epoch_f}, {"eval_loss", el}};
      if (!val_rows.empty()) {
        auto res = predict(*model, val_rows, *tok, predict_opts, *comm);
        for (const auto& kv : res.scores) rec["eval_" + kv.first] = kv.second;
      }
      record(rec);
    }
    bool save_now = (args.save_strategy == "steps" && args.save_steps > 0 && done % args.save_steps == 0) ||
                    (args.save_strategy == "epoch" && done % steps_per_epoch == 0);
    if (save_now) save(true, done);
    progress.step(done);
    if (done == stall_after && rank == world - 1)
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  progress.finish();
  // Like trainer.save_model(): the final result sits in output_dir itself.
  save(false, total_steps);
  if (verbose) std::printf("ftrun: saved %s adapter to %s\n", strategy->name().c_str(), args.output_dir.c_str());
  if (do_test) {
    // trainer.predict(test_dataset): loss, and with generation the metrics and predictions.
    auto [tl_sum, tl_count] =
        distributed_loss_sum_and_count(*model, test_samples, args.per_device_eval_batch_size, pad_id, *comm);
    double tl = tl_count > 0 ? tl_sum / double(tl_count) : std::nan("");
    nlohmann::json rec = {{"step", total_steps}, {"test_loss", tl}};
    PredictResult res;
    if (!test_rows.empty()) res = predict(*model, test_rows, *tok, predict_opts, *comm);
    for (const auto& kv : res.scores) rec["test_" + kv.first] = kv.second;
    if (rank == 0 && !test_rows.empty()) {
      auto path = (fs::path(args.output_dir) / "predictions.jsonl").string();
      write_predictions(path, test_rows, res.predictions);
      if (verbose) std::printf("ftrun: wrote %zu test predictions to %s\n", test_rows.size(), path.c_str());
    }
    record(rec);
  }
  return summary;
}

}  // namespace ftrun::runtime
