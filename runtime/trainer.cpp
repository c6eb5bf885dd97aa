// The training loop and the run around it (see trainer.h).
#include "runtime/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <csignal>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "data/dataset.h"
#include "data/packing.h"
#include "runtime/checkpoint.h"
#include "runtime/device.h"
#include "runtime/evaluate.h"
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "runtime/precision.h"
#include "runtime/report.h"
#include "runtime/run_setup.h"
#include "runtime/tensorboard.h"

namespace fs = std::filesystem;

namespace ftrun::runtime {

Stepper::Stepper(models::CausalLM& model, const peft::NamedTensors& trainable,
                 const TrainingArgs& args, int64_t total_steps, std::shared_ptr<comm::Comm> comm,
                 int zero_stage, bool keep_params)
    : model_(model), comm_(comm ? std::move(comm) : comm::make_single_comm()),
      max_grad_norm_(args.max_grad_norm), autocast_(args.bf16) {
  std::vector<at::Tensor> params;
  std::vector<bool> decay;
  std::vector<double> lr_scale;
  // LoRA+ (PEFT 0.14's create_loraplus_optimizer): "lora_B" tensors and 1-D ones (groupB)
  // train at learning_rate * ratio, the rest (groupA) at learning_rate; decay as before.
  const double ratio = args.loraplus_lr_ratio;
  bool any_b = false;
  for (const auto& kv : trainable) {
    params.push_back(kv.second);
    decay.push_back(sharding::decays(kv.first));
    const bool group_b = ratio > 0 && (kv.first.find("lora_B") != std::string::npos || kv.second.dim() == 1);
    lr_scale.push_back(group_b ? ratio : 1.0);
    any_b = any_b || group_b;
  }
  if (ratio > 0 && !any_b)
    throw std::runtime_error("loraplus_lr_ratio is set, but no trainable tensor is a LoRA B matrix (LoRA+ needs peft_type: LORA)");
  sharding::ZeroConfig zc;
  zc.stage = zero_stage;
  zc.keep_params = keep_params;
  zc.gradient_checkpointing = args.gradient_checkpointing;
  zc.adam = {args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay};
  engine_ = std::make_unique<sharding::ZeroEngine>(model, params, decay, comm_, zc, lr_scale);
  neftune_alpha_ = args.neftune_noise_alpha;
  seed_ = args.seed;
  schedule_.type = args.lr_scheduler_type;
  schedule_.total_steps = total_steps;
  schedule_.warmup_steps = warmup_steps_for(args.warmup_steps, args.warmup_ratio, total_steps);
  schedule_.base_lr = args.learning_rate;
}

uint64_t neftune_seed(int64_t seed, int64_t step, int64_t micro, int64_t rank) {
  auto mix = [](uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(uint64_t(seed));
  for (int64_t v : {step, micro, rank}) h = mix(h ^ uint64_t(v));
  return h >> 1;
}

namespace {

// NEFTune (HF's neftune_post_forward_hook) on the model's token embeddings for the lifetime of
// this scope: output + U(-m, m), m = alpha / sqrt(T * H), T = the padded batch length. m is
// computed with the tensor ops HF uses (torch.sqrt of an int64 tensor, then alpha / it, which
// torch evaluates as reciprocal() * alpha in float32), and the noise is drawn with uniform_ on
// a zeros_like(output) from a dedicated generator (the default CPU generator, which dropout
// uses, is never touched).
class NeftuneScope {
 public:
  NeftuneScope(models::CausalLM& model, double alpha, uint64_t seed) : model_(model), on_(alpha > 0) {
    if (!on_) return;
    model_.set_embedding_hook([alpha, seed](const at::Tensor& h) {
      auto dims = torch::tensor(int64_t(h.size(1) * h.size(2)), torch::kLong);
      const double mag = (torch::sqrt(dims).reciprocal() * alpha).item<double>();
      auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
      // Drawn on the CPU (the same noise on every device), then moved to the embeddings' device.
      auto noise = torch::zeros(h.sizes(), h.options().device(c10::kCPU)).uniform_(-mag, mag, gen);
      return h + noise.to(h.device());
    });
  }
  ~NeftuneScope() {
    if (on_) model_.set_embedding_hook(nullptr);
  }
  NeftuneScope(const NeftuneScope&) = delete;
  NeftuneScope& operator=(const NeftuneScope&) = delete;

 private:
  models::CausalLM& model_;
  bool on_;
};

}  // namespace

StepStats Stepper::step(const std::vector<data::Batch>& micro_batches) {
  StepStats s;
  int64_t local_labels = 0, local_inputs = 0;
  for (const auto& b : micro_batches) {
    local_labels += b.num_label_tokens;
    local_inputs += (b.attention_mask != 0).sum().item<int64_t>();  // packed masks hold sample indices
  }
  // Token counts of the whole global batch (exact in float64 far beyond any batch size).
  auto counts = torch::tensor({double(local_labels), double(local_inputs)}, torch::kDouble);
  if (comm_->world_size() > 1) comm_->all_reduce_sum(counts);
  s.label_tokens = int64_t(counts[0].item<double>());
  s.input_tokens = int64_t(counts[1].item<double>());
  model_.train();
  engine_->begin();
  double loss_local = 0;
  const auto device = model_.device();
  if (s.label_tokens > 0) {
    for (const auto& host_batch : micro_batches) {
      const auto b = batch_on(host_batch, device);  // pinned, asynchronous on a GPU
      at::Tensor loss;
      {
        // bf16: true (HF Trainer): the forward and the loss under CPU bf16 autocast; backward
        // runs outside it and follows the dtypes the forward chose.
        AutocastGuard autocast(autocast_);
        // NEFTune: this forward's noise, keyed by (seed, step, micro-batch, rank) for resume.
        NeftuneScope neftune(model_, neftune_alpha_,
                             neftune_seed(seed_, engine_->steps(), &host_batch - micro_batches.data(), comm_->rank()));
        // The head and its loss in chunks over the labelled positions (models/chunked_loss.h):
        // no [batch, seq, vocab] logits.
        loss = model_.forward_loss(b.input_ids, b.attention_mask, b.labels) / double(s.label_tokens);
      }
      engine_->backward(loss);
      loss_local += loss.item<double>();
    }
  }
  if (poison_loss_) loss_local = std::nan("");  // test fault injection (see trainer.h)
  poison_loss_ = false;
  auto loss_t = torch::tensor({loss_local}, torch::kDouble);
  if (comm_->world_size() > 1) comm_->all_reduce_sum(loss_t);
  s.loss = loss_t.item<double>();
  s.grad_norm = engine_->reduce_and_clip(max_grad_norm_);
  s.lr = schedule_.lr(engine_->steps());
  // Issue 16: a NaN/inf loss or grad norm applies no update (the caller stops or skips). Every
  // rank decides alike without another collective: the loss was summed over ranks above (a
  // NaN anywhere is NaN everywhere) and the grad norm is the global one.
  if (!std::isfinite(s.loss) || !std::isfinite(s.grad_norm)) {
    s.nonfinite = true;
    engine_->begin();  // zero the grads now, as DeepSpeed does on an overflow
    return s;
  }
  engine_->step(s.lr);
  return s;
}

double evaluate_loss(models::CausalLM& model, const std::vector<data::Sample>& samples,
                     int64_t batch_size, int64_t pad_id) {
  auto [sum, count] = loss_sum_and_count(model, samples, batch_size, pad_id);
  return count > 0 ? sum / double(count) : std::nan("");
}

namespace {

// Evaluation and test data, all read before training so a bad file fails first.
struct EvalData {
  bool do_eval = false, do_test = false;
  std::vector<data::Sample> val_samples, test_samples;
  std::vector<PredictRow> val_rows, test_rows;  // only with predict_with_generate
  PredictOptions predict;
};

// The training run of one rank: the steps of train() as named methods over shared state.
class TrainRun {
 public:
  TrainRun(const Config& cfg, bool verbose, std::shared_ptr<comm::Comm> comm)
      : cfg_(cfg), args_(cfg.training_args), comm_(std::move(comm)), rank_(comm_->rank()),
        world_(comm_->world_size()), verbose_(verbose && rank_ == 0) {}

  TrainSummary run(const std::string& resume) {
    prepare_output_dir(cfg_, *comm_);  // checkpoint.h: before anything is written
    prepare_data();
    build_model(resume);
    plan_steps();
    start(resume);
    loop();
    finish();
    if (rank_ == 0) write_report_after_training(args_.output_dir, verbose_ && info_enabled());  // report.h
    return summary_;
  }

 private:
  // Config, tokenizer, template and tokenized data (run_setup.h); warnings on rank 0.
  void prepare_data() {
    setup_ = setup_run(cfg_, world_);
    for (const auto& w : setup_.warnings)
      if (verbose_) std::cerr << "warning: " << w << "\n";
    torch::manual_seed(uint64_t(args_.seed));
    train_samples_ = setup_.encode(cfg_.data_config.train_file, *comm_);
    if (cfg_.packing) {
      // packing: true (data/packing.h): the stream is of packed rows, planned once from the
      // sample lengths and the seed, identically on every rank and on resume.
      data::PackOptions po;
      po.capacity = setup_.chat_template->max_length({cfg_.max_input_length, cfg_.max_output_length, cfg_.combine});
      po.seed = uint64_t(args_.seed);
      packed_rows_ = data::pack_samples(data::sample_lengths(train_samples_), po);
    }
    ev_.do_eval = args_.eval_strategy != "no" && !cfg_.data_config.val_file.empty();
    if (ev_.do_eval) ev_.val_samples = setup_.encode(cfg_.data_config.val_file, *comm_);
    // trainer.predict(test) after training: test_loss always; with predict_with_generate the
    // val rows are also generated at each evaluation and the test rows into predictions.jsonl.
    ev_.do_test = !cfg_.data_config.test_file.empty();
    if (ev_.do_eval && args_.predict_with_generate)
      ev_.val_rows = setup_.rows(cfg_.data_config.val_file, "data_config.val_file");
    if (ev_.do_test && args_.predict_with_generate)
      ev_.test_rows = setup_.rows(cfg_.data_config.test_file, "data_config.test_file");
    if (ev_.do_test) ev_.test_samples = setup_.encode(cfg_.data_config.test_file, *comm_);
    if (!ev_.val_rows.empty() || !ev_.test_rows.empty()) {
      ev_.predict = setup_.predict_options(world_);
      ev_.predict.synced = setup_.zero_stage == 3;  // every forward is collective: ranks keep in step
    }
  }

  // The base model with the strategy applied, and the weights to start from: a checkpoint's
  // (resume) or an existing adapter's (adapter_name_or_path).
  void build_model(const std::string& resume) {
    device_ = resolve_device(cfg_);
    strategy_ = peft::make_strategy(cfg_.peft_config);
    precision_ = resolve_precision(cfg_, setup_.model_config, *strategy_);
    for (const auto& note : precision_.notes)
      if (verbose_ && info_enabled()) std::printf("ftrun: %s\n", note.c_str());
    // The base in its dtype; the strategy's trainable tensors are made afterwards, in fp32.
    // Straight into the device's memory (runtime/device.h: device, use_cpu, LOCAL_RANK).
    model_ = models::load_pretrained(cfg_.model_dir, precision_.weights, device_);
    model_->set_attention_kernel(models::resolve_attention_kernel(cfg_.attn_implementation));
    strategy_->apply(*model_);
    // The strategy's tensors (LoRA, prefix encoder) are made on the CPU, with the CPU
    // generator (the same init on every device), and join the base weights here; a checkpoint
    // or adapter below is then read straight into them.
    if (!device_.is_cpu()) model_->to(device_);
    std::string message;
    std::vector<std::string> skipped;  // damaged checkpoints --resume yes passed over
    resume_dir_ = resolve_resume(resume, args_.output_dir, &message, &skipped);
    for (const auto& w : skipped)
      if (verbose_) std::cerr << "warning: " << w << "\n";
    if (verbose_ && info_enabled() && !message.empty()) std::printf("ftrun: %s\n", message.c_str());
    if (resume_dir_) {
      state_ = read_trainer_state(*resume_dir_);
      for (const auto& note : check_resume_compatible(cfg_, *strategy_, state_, setup_.model_config.raw))
        if (verbose_ && info_enabled()) std::printf("ftrun: resuming with a changed setting: %s\n", note.c_str());
      // LoRA+: the ratio is recorded in the checkpoint's peft_config. Like learning_rate, a
      // changed one is allowed and noted (the moments carry over; only the step size changes).
      auto ratio_of = [](const nlohmann::json& p) {
        return p.is_object() && p.contains("loraplus_lr_ratio") ? p["loraplus_lr_ratio"] : nlohmann::json();
      };
      if (ratio_of(state_.peft_config) != ratio_of(cfg_.peft_config) && verbose_)
        std::cerr << "warning: resuming with a changed setting: peft_config.loraplus_lr_ratio changed from "
                  << ratio_of(state_.peft_config).dump() << " to " << ratio_of(cfg_.peft_config).dump() << "\n";
      // Weights before the engine takes them over (it packs their current values).
      strategy_->load(resume_dir_->string());
    } else if (!cfg_.adapter_name_or_path.empty()) {
      // Continue training an existing adapter (PEFT's own, or an earlier ftrun output).
      strategy_->load(cfg_.adapter_name_or_path);
      if (verbose_ && info_enabled()) std::printf("ftrun: starting from the adapter in %s\n", cfg_.adapter_name_or_path.c_str());
    }
  }

  // The global batch of a micro-step is world x per-device batch; rank r takes the r-th slice
  // of the global sample stream, so any world size sees the same global batches.
  void plan_steps() {
    bs_ = args_.per_device_train_batch_size;
    accum_ = args_.gradient_accumulation_steps;
    global_bs_ = bs_ * world_;
    n_ = int64_t(cfg_.packing ? packed_rows_.size() : train_samples_.size());
    const int64_t batches_per_epoch = (n_ + global_bs_ - 1) / global_bs_;
    steps_per_epoch_ = std::max<int64_t>(1, batches_per_epoch / accum_);
    if (args_.max_steps > 0) {
      total_steps_ = args_.max_steps;
      return;
    }
    // Checked before the cast: a double past int64's range converts to garbage
    // ("-9223372036854775808 steps" for num_train_epochs: 1e30 before this check).
    const double steps = std::ceil(args_.num_train_epochs * double(steps_per_epoch_));
    if (!(steps < 9.0e18))
      throw std::runtime_error(cfg_.path + ": training_args.num_train_epochs " +
                               std::to_string(args_.num_train_epochs) + " x " + std::to_string(steps_per_epoch_) +
                               " steps per epoch is more optimizer steps than a 64-bit count holds");
    total_steps_ = int64_t(steps);
  }

  // The ZeRO engine over the trainable tensors, resumed optimizer state, logs.
  void start(const std::string& resume) {
    (void)resume;
    auto trainable = strategy_->trainable();
    int64_t n_train = 0, n_total = 0;
    for (const auto& kv : trainable) n_train += kv.second.numel();
    for (const auto& p : model_->parameters()) n_total += p.numel();
    all_trainable_ = n_train == n_total;  // before the engine shards them (locate_nonfinite)
    stepper_ = std::make_unique<Stepper>(*model_, trainable, args_, total_steps_, comm_, setup_.zero_stage,
                                         cfg_.zero3_keep_params);
    if (resume_dir_) {
      check_resume_step(*resume_dir_, state_, total_steps_);
      start_step_ = state_.global_step;
      position_ = state_.position;
      history_ = state_.log_history;
      // nonfinite: skip: skipped steps made no optimizer step; their records carry the count.
      for (const auto& r : history_)
        if (r.contains("skipped_steps") && r["skipped_steps"].is_number_integer() && r.value("step", int64_t(0)) <= start_step_)
          skipped_steps_ = std::max(skipped_steps_, r["skipped_steps"].get<int64_t>());
      load_rank_state(*resume_dir_, stepper_->engine(), start_step_ - skipped_steps_, rank_, device_);
      if (verbose_ && info_enabled())
        std::printf("ftrun: resumed from %s (step %lld, written by %d rank(s) at ZeRO stage %d)\n",
                    resume_dir_->c_str(), (long long)start_step_, state_.world_size, state_.zero_stage);
    }
    if (rank_ == 0) {
      fs::create_directories(args_.output_dir);
      metrics_ = std::make_unique<MetricsLog>((fs::path(args_.output_dir) / "metrics.jsonl").string(),
                                              resume_dir_ ? start_step_ : -1);
      tensorboard_ = open_tensorboard(cfg_, start_step_, resume_dir_.has_value());  // report_to
      write_run_config(args_.output_dir, config_to_json(cfg_));                      // for report.html
    }
    progress_ = std::make_unique<Progress>(total_steps_, verbose_);
    if (verbose_ && info_enabled())
      std::printf("ftrun: %s | %d rank(s), ZeRO stage %d | %lld train samples | %lld steps | trainable %lld of %lld params (%.4f%%)%s\n",
                  strategy_->name().c_str(), world_, setup_.zero_stage, (long long)train_samples_.size(), (long long)total_steps_,
                  (long long)n_train, (long long)n_total, 100.0 * double(n_train) / double(n_total),
                  precision_.weights == at::kFloat && !precision_.autocast_bf16
                      ? ""
                      : (" | " + precision_.describe()).c_str());
    if (cfg_.packing && verbose_ && info_enabled()) {
      int64_t tokens = 0;
      for (const auto& smp : train_samples_) tokens += int64_t(smp.input_ids.size());
      const int64_t cap = setup_.chat_template->max_length({cfg_.max_input_length, cfg_.max_output_length, cfg_.combine});
      std::printf("ftrun: packing: %lld samples in %lld rows of up to %lld tokens (%.1f%% of the row slots are padding)\n",
                  (long long)train_samples_.size(), (long long)n_, (long long)cap,
                  100.0 * (1.0 - double(tokens) / double(std::max<int64_t>(1, n_ * cap))));
    }
    summary_.output_dir = args_.output_dir;
    order_ = data::epoch_order(n_, uint64_t(args_.seed), 0);
    reset_cuda_peak_memory(device_);  // the peaks logged are those of training
    window_start_ = std::chrono::steady_clock::now();
  }

  // The global sample stream: epoch e visits epoch_order(n, seed, e). With packing its
  // elements are packed rows (n_ rows), shuffled per epoch as HF's sampler shuffles them.
  int64_t index_at(int64_t pos) {
    if (pos / n_ != order_epoch_) {
      order_epoch_ = pos / n_;
      order_ = data::epoch_order(n_, uint64_t(args_.seed), order_epoch_);
    }
    return order_[size_t(pos % n_)];
  }
  const data::Sample* sample_at(int64_t pos) { return &train_samples_[size_t(index_at(pos))]; }

  // One micro-batch of this rank starting at stream position `pos`.
  data::Batch micro_batch_at(int64_t pos) {
    if (cfg_.packing) {
      std::vector<std::vector<const data::Sample*>> rows;
      for (int64_t k = 0; k < bs_; ++k) {
        rows.emplace_back();
        for (int64_t i : packed_rows_[size_t(index_at(pos + k))]) rows.back().push_back(&train_samples_[size_t(i)]);
      }
      return data::collate_packed(rows, setup_.pad_id);
    }
    std::vector<const data::Sample*> group;
    for (int64_t k = 0; k < bs_; ++k) group.push_back(sample_at(pos + k));
    return data::collate(group, setup_.pad_id);
  }

  void record(const nlohmann::json& rec) {
    if (rank_ != 0) return;
    metrics_->write(rec);
    if (tensorboard_) tensorboard_->write(rec);
    history_.push_back(rec);
    progress_->log(rec);
  }

  SaveContext save_context() {
    return SaveContext{cfg_, *strategy_, *model_, stepper_->engine(), *comm_, setup_.zero_stage, device_};
  }

  void loop() {
    // Fault injection for the launcher's --progress-timeout test: after this step the last
    // rank stays alive (its heartbeat thread goes on) but makes no more progress; the others
    // wait for it in a collective.
    const char* stall_env = std::getenv("FTRUN_TEST_STALL_AFTER_STEP");
    const int64_t stall_after = stall_env ? std::atoll(stall_env) : -1;
    // Fault injection for the non-finite step tests: at step S the last rank's local loss is
    // NaN (its gradients stay finite), so every rank must learn of it through the loss sum.
    const char* nan_env = std::getenv("FTRUN_TEST_NAN_LOSS_AT_STEP");
    const int64_t nan_at = nan_env ? std::atoll(nan_env) : -1;
    for (int64_t step = start_step_; step < total_steps_; ++step) {
      std::vector<data::Batch> micro;
      for (int64_t a = 0; a < accum_; ++a) {
        micro.push_back(micro_batch_at(position_ + rank_ * bs_));
        position_ += global_bs_;
      }
      if (step + 1 == nan_at && rank_ == world_ - 1) stepper_->poison_next_loss();
      auto st = stepper_->step(micro);
      summary_.steps.push_back(st);
      const int64_t done = step + 1;
      if (st.nonfinite) on_nonfinite(st, done, micro);  // stop: throws; skip: recorded
      else log_step(st, done);
      if (due(args_.eval_strategy, args_.eval_steps > 0 ? args_.eval_steps : args_.logging_steps, done) && ev_.do_eval)
        evaluate(done);
      if (due(args_.save_strategy, args_.save_steps, done)) save_checkpoint_at(done);
      progress_->step(done);
      if (done == stall_after && rank_ == world_ - 1)
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    progress_->finish();
  }

  // A step whose loss or grad norm is NaN/inf (Stepper applied no update). nonfinite: stop (the
  // default) throws, on every rank alike, before anything of this step is logged or saved, so
  // the newest checkpoint stays the one before; skip warns and records the count (DeepSpeed's
  // skipped_steps), and the loop goes on.
  void on_nonfinite(const StepStats& st, int64_t done, const std::vector<data::Batch>& micro) {
    auto num = [](double v) {
      if (std::isnan(v)) return std::string("nan");  // not "-nan"
      std::ostringstream os;
      os << v;
      return os.str();
    };
    const std::string what = "loss " + num(st.loss) + ", grad norm " + num(st.grad_norm);
    if (cfg_.nonfinite == "skip") {
      ++skipped_steps_;
      if (verbose_)
        std::cerr << "warning: step " << done << ": " << what << ": step skipped (nonfinite: skip; "
                  << skipped_steps_ << " skipped so far)\n";
      record({{"step", done}, {"epoch", double(position_) / double(n_)}, {"skipped_steps", skipped_steps_}});
      return;
    }
    const std::string where = locate_nonfinite(micro);
    std::string last = "no checkpoint was saved before it";
    if (auto newest = newest_checkpoint_step(); newest > 0)
      last = "the newest checkpoint is " + (fs::path(args_.output_dir) / ("checkpoint-" + std::to_string(newest))).string();
    throw std::runtime_error("training stopped at step " + std::to_string(done) + ": " + what + where + "; " + last +
                             " (set nonfinite: skip to skip such steps)");
  }

  // The newest checkpoint-N in output_dir (0: none).
  int64_t newest_checkpoint_step() const {
    int64_t best = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(args_.output_dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("checkpoint-", 0) != 0 || !fs::exists(e.path() / "COMPLETE")) continue;
      try {
        best = std::max<int64_t>(best, std::stoll(name.substr(11)));
      } catch (const std::exception&) {
      }
    }
    return best;
  }

  // Where the NaN/inf came from, as "; first non-finite output: model.layers.3; non-finite
  // weight: NAME" (parts left out when not found). Collective: every rank calls it. The
  // weights are scanned unit by unit (gathered under ZeRO-3); the step's micro-batches are
  // re-run forward with each unit's output checked through the unit runner, on the weights
  // that produced them (no update was applied), and the ranks agree on the earliest unit.
  // Under ZeRO-3 with frozen weights (LoRA) the units cannot be run outside the engine's
  // runner, so only the weights are scanned. The engine's runner is not put back: training
  // stops after this.
  std::string locate_nonfinite(const std::vector<data::Batch>& micro) {
    std::string bad_weight;
    auto& engine = stepper_->engine();
    engine.for_each_unit_full([&](const sharding::ZeroEngine::NamedTensors& tensors) {
      for (const auto& kv : tensors)
        if (bad_weight.empty() && kv.second.is_floating_point() && !torch::isfinite(kv.second).all().item<bool>())
          bad_weight = kv.first + (torch::isnan(kv.second).any().item<bool>() ? " (NaN)" : " (inf)");
    });
    const auto prefixes = model_->unit_prefixes();
    const int64_t units = int64_t(prefixes.size());
    const bool can_run = setup_.zero_stage != 3 || all_trainable_;
    int64_t first = units;  // none
    if (can_run) {
      engine.with_full_trainable([&] {
        torch::NoGradGuard ng;
        AutocastGuard autocast(precision_.autocast_bf16);
        model_->set_unit_runner([&first](int64_t unit, const models::CausalLM::UnitFn& fn, const at::Tensor& x) {
          auto out = fn(x);
          if (unit < first && out.is_floating_point() && !torch::isfinite(out).all().item<bool>()) first = unit;
          return out;
        });
        for (const auto& host_batch : micro) {
          try {
            const auto b = batch_on(host_batch, device_);
            model_->forward_loss(b.input_ids, b.attention_mask, b.labels);
          } catch (const std::exception&) {
            break;  // a diagnosis only; the error reported is the non-finite step's
          }
        }
      });
    }
    // The earliest unit over all ranks (each ran its own micro-batches).
    auto found = torch::zeros({units + 1}, torch::kDouble);
    found[first] = 1.0;
    if (world_ > 1) comm_->all_reduce_sum(found);
    for (int64_t u = 0; u < units; ++u)
      if (found[u].item<double>() > 0) {
        first = u;
        break;
      }
    std::string out;
    if (first < units) {
      std::string name;
      for (const auto& p : prefixes[size_t(first)]) {
        std::string n = !p.empty() && p.back() == '.' ? p.substr(0, p.size() - 1) : p;
        name += (name.empty() ? "" : " + ") + (n.empty() ? std::string("the model") : n);
      }
      out += "; first non-finite output: " + name;
    } else if (can_run) {
      out += "; a rerun of the step's forward is finite in every module";
    } else {
      out += "; (ZeRO-3 with frozen weights: the module is not located)";
    }
    if (!bad_weight.empty()) out += "; non-finite weight: " + bad_weight;
    return out;
  }

  // HF's IntervalStrategy: "steps" every `every` steps, "epoch" at each epoch's end.
  bool due(const std::string& strategy, int64_t every, int64_t done) const {
    return (strategy == "steps" && every > 0 && done % every == 0) ||
           (strategy == "epoch" && done % steps_per_epoch_ == 0);
  }

  // A metrics record per logging window (and one at the last step), averaged over the window.
  void log_step(const StepStats& st, int64_t done) {
    window_loss_ += st.loss;
    window_steps_ += 1;
    window_tokens_ += st.input_tokens;
    bool log_now = args_.logging_strategy != "no" && due(args_.logging_strategy, args_.logging_steps, done);
    if (!(log_now || (done == total_steps_ && args_.logging_strategy != "no" && window_steps_ > 0))) return;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start_).count();
    nlohmann::json rec = {{"step", done},
                          {"epoch", double(position_) / double(n_)},
                          {"loss", window_loss_ / double(window_steps_)},
                          {"learning_rate", stepper_->schedule().lr(done)},
                          {"grad_norm", st.grad_norm},
                          {"tokens_per_second", secs > 0 ? double(window_tokens_) / secs : 0.0}};
    add_cuda_peaks(rec);
    record(rec);
    window_loss_ = 0;
    window_steps_ = 0;
    window_tokens_ = 0;
    window_start_ = std::chrono::steady_clock::now();
  }

  // On a GPU: every rank's peak CUDA memory since training started (allocated and reserved,
  // MiB; torch.cuda.max_memory_allocated / max_memory_reserved), one entry per rank. Every
  // rank logs at the same steps, so the sum that collects them is issued by all.
  void add_cuda_peaks(nlohmann::json& rec) {
    if (!device_.is_cuda()) return;
    auto all = torch::zeros({2, world_}, torch::kDouble);
    if (auto peak = cuda_peak_memory(device_)) {
      all[0][rank_] = peak->allocated_mib;
      all[1][rank_] = peak->reserved_mib;
    }
    if (world_ > 1) comm_->all_reduce_sum(all);
    std::vector<double> allocated(static_cast<size_t>(world_)), reserved(static_cast<size_t>(world_));
    for (int r = 0; r < world_; ++r) {
      allocated[size_t(r)] = all[0][r].item<double>();
      reserved[size_t(r)] = all[1][r].item<double>();
    }
    rec["cuda_peak_allocated_mib"] = allocated;
    rec["cuda_peak_reserved_mib"] = reserved;
  }

  // Rows split across ranks, in lock-step (under ZeRO-3 each forward is collective).
  void evaluate(int64_t done) {
    AutocastGuard autocast(precision_.autocast_bf16);  // HF evaluates under the same autocast
    auto [sum, count] =
        distributed_loss_sum_and_count(*model_, ev_.val_samples, args_.per_device_eval_batch_size, setup_.pad_id, *comm_);
    nlohmann::json rec = {{"step", done},
                          {"epoch", double(position_) / double(n_)},
                          {"eval_loss", count > 0 ? sum / double(count) : std::nan("")}};
    if (!ev_.val_rows.empty()) {
      auto res = predict(*model_, ev_.val_rows, *setup_.tokenizer, ev_.predict, *comm_);
      for (const auto& kv : res.scores) rec["eval_" + kv.first] = kv.second;
    }
    record(rec);
  }

  void save_checkpoint_at(int64_t done) {
    TrainerState state;
    state.global_step = done;
    state.position = position_;
    state.epoch = double(position_) / double(n_);
    state.log_history = history_;
    state.world_size = world_;
    state.zero_stage = setup_.zero_stage;
    state.strategy = strategy_->name();
    state.peft_config = cfg_.peft_config;
    state.model_config = setup_.model_config.raw;
    state.training_args = resume_training_args(args_);
    state.seed = args_.seed;
    state.packing = cfg_.packing;
    save_checkpoint(save_context(), state);
  }

  // Like trainer.save_model(): the final result in output_dir itself; then trainer.predict on
  // the test split (loss, and with generation the metrics and predictions.jsonl).
  void finish() {
    save_final(save_context());
    if (verbose_ && info_enabled()) std::printf("ftrun: saved %s adapter to %s\n", strategy_->name().c_str(), args_.output_dir.c_str());
    if (!ev_.do_test) return;
    AutocastGuard autocast(precision_.autocast_bf16);
    auto [sum, count] =
        distributed_loss_sum_and_count(*model_, ev_.test_samples, args_.per_device_eval_batch_size, setup_.pad_id, *comm_);
    nlohmann::json rec = {{"step", total_steps_}, {"test_loss", count > 0 ? sum / double(count) : std::nan("")}};
    PredictResult res;
    if (!ev_.test_rows.empty()) res = predict(*model_, ev_.test_rows, *setup_.tokenizer, ev_.predict, *comm_);
    for (const auto& kv : res.scores) rec["test_" + kv.first] = kv.second;
    if (rank_ == 0 && !ev_.test_rows.empty()) {
      auto path = (fs::path(args_.output_dir) / "predictions.jsonl").string();
      write_predictions(path, ev_.test_rows, res.predictions);
      if (verbose_ && info_enabled()) std::printf("ftrun: wrote %zu test predictions to %s\n", ev_.test_rows.size(), path.c_str());
    }
    record(rec);
  }

  const Config& cfg_;
  const TrainingArgs& args_;
  std::shared_ptr<comm::Comm> comm_;
  const int rank_, world_;
  const bool verbose_;

  RunSetup setup_;
  std::vector<data::Sample> train_samples_;
  std::vector<data::PackedRow> packed_rows_;  // packing: the rows, as indices into train_samples_
  EvalData ev_;
  std::shared_ptr<models::CausalLM> model_;
  c10::Device device_ = c10::Device(c10::kCPU);  // where the model and its state live
  std::unique_ptr<peft::Strategy> strategy_;
  Precision precision_;
  std::optional<fs::path> resume_dir_;
  TrainerState state_;  // the resumed checkpoint's

  int64_t bs_ = 0, accum_ = 0, global_bs_ = 0, n_ = 0, steps_per_epoch_ = 1, total_steps_ = 0;
  std::unique_ptr<Stepper> stepper_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // rank 0, when report_to has tensorboard
  std::unique_ptr<Progress> progress_;
  TrainSummary summary_;
  nlohmann::json history_ = nlohmann::json::array();
  int64_t start_step_ = 0, position_ = 0, order_epoch_ = 0;
  std::vector<int64_t> order_;
  double window_loss_ = 0;
  int64_t window_steps_ = 0, window_tokens_ = 0;
  int64_t skipped_steps_ = 0;  // nonfinite: skip, so far (resumed from log_history)
  bool all_trainable_ = false;  // every parameter trains (ZeRO-3 can gather them all)
  std::chrono::steady_clock::time_point window_start_;
};

}  // namespace

TrainSummary train(const Config& cfg, bool verbose, std::shared_ptr<comm::Comm> comm, const std::string& resume) {
  if (!comm) comm = comm::make_single_comm();
  return TrainRun(cfg, verbose, std::move(comm)).run(resume);
}

}  // namespace ftrun::runtime
