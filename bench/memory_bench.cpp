// Activation-checkpointing memory benchmark: what gradient_checkpointing saves and costs.
// For full SFT and LoRA on a ~60M Llama (hidden 512, 8 layers, 8 heads / 4 kv heads, ffn
// 1408, vocab 32000), batch 4 x 512 tokens, each ZeRO stage asked for (world of one), with
// checkpointing off and on, one process per row, printing one table:
//   - peak tensor bytes a training step adds over the resting state (model, grads, AdamW
//     moments), counted exactly by a CPU allocator that wraps libtorch's (activations kept
//     for backward, logits and their grads, transient grads);
//   - peak RSS of the process (getrusage maxrss; includes libtorch itself and the allocator's
//     retained pages);
//   - seconds per step (the recompute's price; 2 threads).
//   ninja -C build memory_bench && ./build/bench/memory_bench [--methods full,lora]
//       [--stages 0,3k] [--steps 2] [--batch 4] [--seq 512]
// Stages: 0, 1, 2, 3 (stage 3 recomputes every unit anyway), 3k (stage 3 with keep_params).
#include <sys/resource.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "bench/bench_args.h"
#include "peft/strategy.h"
#include "runtime/trainer.h"
#include "testing/alloc_counter.h"
#include "testing/launch.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

using bench::split_list;

using CountingAllocator = ftrun::testing::AllocationCounter;

models::TinySpec spec_60m() {
  auto s = ftrun::testing::tiny_spec(32000, {512, 1408, 8, 4});
  s.num_hidden_layers = 8;
  s.max_position_embeddings = 1024;
  return s;
}

// One row; prints a JSON line on stdout.
int child(const std::string& method, const std::string& stage_name, bool checkpointing, int steps, int64_t batch,
          int64_t seq) {
  static CountingAllocator counting(c10::GetCPUAllocator());
  c10::SetCPUAllocator(&counting, /*priority=*/100);
  torch::set_num_threads(2);
  const int stage = std::stoi(stage_name.substr(0, 1));
  const bool keep = stage_name == "3k";
  auto spec = spec_60m();
  auto model = ftrun::testing::make_tiny_model({spec, 1});
  nlohmann::json peft = nullptr;
  if (method == "lora")
    peft = {{"peft_type", "LORA"}, {"r", 8}, {"lora_alpha", 16}, {"lora_dropout", 0.05},
            {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
  else if (method != "full")
    throw std::runtime_error("unknown method " + method + " (full or lora)");
  auto strategy = peft::make_strategy(peft);
  strategy->apply(*model);
  runtime::TrainingArgs args;
  args.learning_rate = 1e-4;
  args.gradient_checkpointing = checkpointing;
  runtime::Stepper stepper(*model, strategy->trainable(), args, steps + 1, nullptr, stage, keep);
  data::Batch b;
  b.input_ids = torch::randint(0, spec.vocab_size, {batch, seq}, torch::kLong);
  b.attention_mask = torch::ones({batch, seq}, torch::kLong);
  b.labels = b.input_ids.clone();
  b.num_label_tokens = batch * (seq - 1);
  stepper.step({b});  // warm-up: AdamW state and persistent buffers exist from here on
  const int64_t resting = CountingAllocator::live();
  CountingAllocator::reset_peak();
  auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) stepper.step({b});
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  nlohmann::json j = {{"step_s", secs},
                      {"resting_bytes", resting},
                      {"step_peak_bytes", CountingAllocator::peak() - resting},
                      {"peak_rss_kb", ru.ru_maxrss}};
  std::cout << "RESULT " << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string methods = "full,lora", stages = "0,3k";
  int steps = 2;
  int64_t batch = 4, seq = 512;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--child") {
      auto m = next();
      auto st = next();
      bool gc = next() == "1";
      int n = std::stoi(next());
      int64_t bsz = std::stoll(next());
      int64_t len = std::stoll(next());
      return child(m, st, gc, n, bsz, len);
    }
    if (a == "--methods") methods = next();
    else if (a == "--stages") stages = next();
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--seq") seq = std::stoll(next());
    else {
      std::cerr << "usage: memory_bench [--methods full,lora] [--stages 0,1,2,3,3k] [--steps 2] [--batch 4] [--seq 512]\n";
      return 2;
    }
  }
  std::printf("60M Llama, batch %lld x %lld tokens, world of one, 2 threads, mean of %d step(s) after 1 warm-up\n\n",
              (long long)batch, (long long)seq, steps);
  std::printf("| method | stage | gradient_checkpointing | step (s) | resting tensors MB | step peak over resting MB | peak RSS MB |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& m : split_list(methods))
    for (const auto& st : split_list(stages))
      for (const char* gc : {"0", "1"}) {
        ftrun::testing::LaunchOptions o;
        o.timeout = std::chrono::minutes(20);
        o.env["OMP_NUM_THREADS"] = "2";
        auto r = ftrun::testing::launch(1, "/proc/self/exe",
                                        {"--child", m, st, gc, std::to_string(steps), std::to_string(batch),
                                         std::to_string(seq)},
                                        o);
        const auto& out = r.children.empty() ? std::string() : r.children[0].out;
        auto pos = out.find("RESULT ");
        if (!r.ok() || pos == std::string::npos) {
          std::printf("| %s | %s | %s | failed: %s |\n", m.c_str(), st.c_str(), gc, r.report().c_str());
          continue;
        }
        auto j = nlohmann::json::parse(out.substr(pos + 7, out.find('\n', pos) - pos - 7));
        std::printf("| %s | %s | %s | %.2f | %.0f | %.0f | %.0f |\n", m.c_str(),
                    st == "3k" ? "3 (keep_params)" : st.c_str(), gc[0] == '1' ? "on" : "off",
                    j["step_s"].get<double>(), j["resting_bytes"].get<double>() / 1e6,
                    j["step_peak_bytes"].get<double>() / 1e6, j["peak_rss_kb"].get<double>() / 1024.0);
        std::fflush(stdout);
      }
  return 0;
}
