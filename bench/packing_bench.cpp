// Packing benchmark (issue 18): tokens/s and padding share, packed (`packing: true`, data/
// packing.h) against unpacked, on the shipped sample data (examples/tiny) through a real
// training step (runtime::Stepper: forward_loss, backward, AdamW), LoRA on the embedded tiny
// model, at the demo's lengths (configs/lora.yaml: max_input_length 512 + max_output_length
// 512 = rows of 1,024 tokens) and each batch size asked for (the demo uses 1 for LoRA and
// full SFT, 4 for P-Tuning v2). Prints one markdown table.
//   ninja -C build packing_bench && ./build/bench/packing_bench [--config configs/tiny/lora.yaml]
//       [--batches 1,4,8] [--epochs 2] [--max-input 512] [--max-output 512]
//       [--hidden H --layers L]
// --hidden/--layers: instead of the embedded tiny model (hidden 64, 2 layers), where attention
// over a 1,024-token row costs more than the weights, a random Llama of that width and depth
// (heads of 64, 2:1 grouped-query, MLP 8/3 x hidden) over the same vocabulary.
// Run from the repository root. Per case: one warm-up step, then `epochs` epochs of the
// sample stream timed (the stream the trainer builds: epoch_order over samples, or over the
// packed rows). tokens/s = non-padding tokens / seconds of those steps; padding share = pad
// slots / all B x T slots of the batches.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "bench/bench_args.h"
#include "comm/comm.h"
#include "data/collator.h"
#include "data/packing.h"
#include "models/model.h"
#include "peft/strategy.h"
#include "runtime/config.h"
#include "runtime/run_setup.h"
#include "runtime/trainer.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

struct Result {
  int64_t rows = 0, steps = 0, tokens = 0, slots = 0;
  double seconds = 0;
};

struct Shape {
  int64_t hidden = 0, layers = 0;  // 0: the config's model_dir
};

Result run_case(const runtime::Config& cfg, const runtime::RunSetup& setup, const std::vector<data::Sample>& samples,
                bool packed, int64_t batch, int epochs, const Shape& shape) {
  torch::manual_seed(uint64_t(cfg.training_args.seed));
  std::shared_ptr<models::CausalLM> model;
  if (shape.hidden > 0) {
    if (setup.model_config.model_type != "llama") throw std::runtime_error("--hidden: a llama config only");
    const int64_t heads = std::max<int64_t>(1, shape.hidden / 64);
    auto spec = ftrun::testing::tiny_spec(setup.model_config.vocab_size,
                                          {shape.hidden, (shape.hidden * 8 / 3 + 7) / 8 * 8, heads, std::max<int64_t>(1, heads / 2)});
    spec.num_hidden_layers = shape.layers;
    spec.max_position_embeddings = 4096;
    model = ftrun::testing::make_tiny_model({spec, uint64_t(cfg.training_args.seed)});
  } else {
    model = models::load_pretrained(cfg.model_dir);
  }
  auto strategy = peft::make_strategy(cfg.peft_config);
  strategy->apply(*model);
  std::vector<data::PackedRow> rows;
  if (packed) {
    data::PackOptions po;
    po.capacity = setup.chat_template->max_length({cfg.max_input_length, cfg.max_output_length, cfg.combine});
    po.seed = uint64_t(cfg.training_args.seed);
    rows = data::pack_samples(data::sample_lengths(samples), po);
  }
  const int64_t n = packed ? int64_t(rows.size()) : int64_t(samples.size());
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  auto batch_at = [&](int64_t pos) {
    const int64_t epoch = pos / n;
    const auto order = data::epoch_order(n, uint64_t(cfg.training_args.seed), epoch);
    if (packed) {
      std::vector<std::vector<const data::Sample*>> group;
      for (int64_t k = 0; k < batch; ++k) {
        group.emplace_back();
        const int64_t p = pos + k;
        const auto& o = p / n == epoch ? order : data::epoch_order(n, uint64_t(cfg.training_args.seed), p / n);
        for (int64_t i : rows[size_t(o[size_t(p % n)])]) group.back().push_back(&samples[size_t(i)]);
      }
      return data::collate_packed(group, setup.pad_id);
    }
    std::vector<const data::Sample*> group;
    for (int64_t k = 0; k < batch; ++k) {
      const int64_t p = pos + k;
      const auto& o = p / n == epoch ? order : data::epoch_order(n, uint64_t(cfg.training_args.seed), p / n);
      group.push_back(&samples[size_t(o[size_t(p % n)])]);
    }
    return data::collate(group, setup.pad_id);
  };
  runtime::TrainingArgs args = cfg.training_args;
  args.per_device_train_batch_size = batch;
  const int64_t timed = steps_per_epoch * epochs;
  runtime::Stepper stepper(*model, strategy->trainable(), args, timed + 1);
  stepper.step({batch_at(0)});  // warm-up (allocator, OpenMP pools)
  Result r;
  r.rows = n;
  r.steps = timed;
  int64_t pos = batch;
  for (int64_t s = 0; s < timed; ++s, pos += batch) {
    auto b = batch_at(pos);
    r.tokens += (b.attention_mask != 0).sum().item<int64_t>();
    r.slots += b.attention_mask.numel();
    auto t0 = std::chrono::steady_clock::now();
    stepper.step({b});
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "configs/tiny/lora.yaml", batches = "1,4,8";
  int epochs = 2;
  Shape shape;
  int64_t max_in = 512, max_out = 512;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--config") config = next();
    else if (a == "--batches") batches = next();
    else if (a == "--epochs") epochs = std::stoi(next());
    else if (a == "--max-input") max_in = std::stoll(next());
    else if (a == "--max-output") max_out = std::stoll(next());
    else if (a == "--hidden") shape.hidden = std::stoll(next());
    else if (a == "--layers") shape.layers = std::stoll(next());
    else {
      std::cerr << "packing_bench: unknown option " << a << "\n";
      return 2;
    }
  }
  auto cfg = runtime::load_config(config, {"max_input_length=" + std::to_string(max_in),
                                           "max_output_length=" + std::to_string(max_out),
                                           "training_args.output_dir=/tmp/ftrun_packing_bench"});
  auto setup = runtime::setup_run(cfg, 1);
  auto comm = comm::make_single_comm();
  auto samples = setup.encode(cfg.data_config.train_file, *comm);
  int64_t tokens = 0;
  for (const auto& s : samples) tokens += int64_t(s.input_ids.size());
  if (shape.hidden > 0 && shape.layers <= 0) shape.layers = 2;
  std::printf("%s: %zu samples, %lld tokens (mean %.1f), rows of %lld tokens, %d timed epoch(s), threads %d, model %s\n\n",
              cfg.data_config.train_file.c_str(), samples.size(), (long long)tokens,
              double(tokens) / double(samples.size()), (long long)(max_in + max_out), epochs, torch::get_num_threads(),
              shape.hidden > 0 ? ("random llama hidden " + std::to_string(shape.hidden) + " x " + std::to_string(shape.layers) +
                                  " layers").c_str()
                               : cfg.model_dir.c_str());
  std::printf("| batch | mode | rows/epoch | steps | padding share | tokens/s | speed-up |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|\n");
  for (const auto& bs : bench::split_list(batches)) {
    const int64_t batch = std::stoll(bs);
    double base = 0;
    for (bool packed : {false, true}) {
      auto r = run_case(cfg, setup, samples, packed, batch, epochs, shape);
      const double tps = double(r.tokens) / r.seconds;
      if (!packed) base = tps;
      std::printf("| %lld | %s | %lld | %lld | %.1f%% | %.0f | %s |\n", (long long)batch, packed ? "packed" : "unpacked",
                  (long long)r.rows, (long long)r.steps, 100.0 * double(r.slots - r.tokens) / double(r.slots), tps,
                  packed ? (std::to_string(tps / base).substr(0, 4) + "x").c_str() : "1.00x");
      std::fflush(stdout);
    }
  }
  return 0;
}
