// ZeRO benchmark: full fine-tuning of the tiny model and a ~60M-parameter Llama for stages
// 0-3 at 1, 2 and 4 ranks (gloo on loopback, one process per rank), printing one table:
// step time, tokens/s, bytes sent per step, model-state bytes per rank, peak RSS per rank.
//   ninja -C build zero_bench && ./build/bench/zero_bench [--models tiny,60m] [--worlds 1,2,4]
//                                                          [--stages 0,1,2,3] [--steps 3]
// Runs on whatever cores the machine has: on a 2-core box 4 ranks share 2 cores, so step
// times there measure contention as much as ZeRO; bytes and memory are exact regardless.
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "bench/bench_args.h"
#include "comm/rank_info.h"
#include "comm/rendezvous.h"
#include "peft/strategy.h"
#include "runtime/trainer.h"
#include "testing/launch.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

using bench::split_list;

models::TinySpec spec_of(const std::string& name) {
  models::TinySpec s;
  if (name == "tiny") {
    s.vocab_size = 405;  // the embedded demo model's shape
  } else if (name == "60m") {
    s = ftrun::testing::tiny_spec(32000, {512, 1408, 8, 8});
    s.num_hidden_layers = 8;
    s.max_position_embeddings = 1024;
  } else {
    throw std::runtime_error("unknown model " + name + " (tiny or 60m)");
  }
  return s;
}

// One rank's run; prints a JSON line on stdout.
int child(const std::string& model_name, int stage, int steps) {
  auto comm = comm::init_comm(comm::detect_rank_info(), "gloo", std::chrono::minutes(5));
  torch::set_num_threads(1);
  auto spec = spec_of(model_name);
  auto model = ftrun::testing::make_tiny_model({spec, 1});
  auto strategy = peft::make_strategy(nullptr);
  strategy->apply(*model);
  int64_t params = 0;
  for (const auto& kv : strategy->trainable()) params += kv.second.numel();  // before ZeRO-3 shards them
  runtime::TrainingArgs args;
  args.learning_rate = 1e-4;
  runtime::Stepper stepper(*model, strategy->trainable(), args, steps + 1, comm, stage);
  const int64_t batch = 2, seq = 128;
  data::Batch b;
  b.input_ids = torch::randint(0, spec.vocab_size, {batch, seq}, torch::kLong);
  b.attention_mask = torch::ones({batch, seq}, torch::kLong);
  b.labels = b.input_ids.clone();
  b.num_label_tokens = batch * (seq - 1);
  stepper.step({b});  // warm-up
  uint64_t bytes0 = comm->stats().bytes_sent;
  auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) stepper.step({b});
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  nlohmann::json j = {{"rank", comm->rank()},
                      {"step_s", secs},
                      {"tokens_per_s", double(batch * seq * comm->world_size()) / secs},
                      {"bytes_per_step", double(comm->stats().bytes_sent - bytes0) / steps},
                      {"model_state", stepper.engine().memory().model_state()},
                      {"peak_rss_kb", ru.ru_maxrss},
                      {"params", params}};
  std::cout << "RESULT " << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string models = "tiny,60m", worlds = "1,2,4", stages = "0,1,2,3";
  int steps = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--child") {
      auto m = next();
      int stage = std::stoi(next());
      int n = std::stoi(next());
      return child(m, stage, n);
    }
    if (a == "--models") models = next();
    else if (a == "--worlds") worlds = next();
    else if (a == "--stages") stages = next();
    else if (a == "--steps") steps = std::stoi(next());
    else {
      std::cerr << "usage: zero_bench [--models tiny,60m] [--worlds 1,2,4] [--stages 0,1,2,3] [--steps 3]\n";
      return 2;
    }
  }
  std::printf("| model | params | stage | ranks | step (s) | tokens/s | MB sent/step/rank | model state MB/rank | peak RSS MB/rank |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& m : split_list(models))
    for (const auto& st : split_list(stages))
      for (const auto& w : split_list(worlds)) {
        ftrun::testing::LaunchOptions o;
        o.timeout = std::chrono::minutes(10);
        o.kill_all_on_failure = true;
        auto r = ftrun::testing::launch(std::stoi(w), "/proc/self/exe", {"--child", m, st, std::to_string(steps)}, o);
        if (!r.ok()) {
          std::printf("| %s | | %s | %s | failed: %s |\n", m.c_str(), st.c_str(), w.c_str(), r.report().c_str());
          continue;
        }
        double step = 0, tps = 0, bytes = 0, state = 0, rss = 0, params = 0;
        for (const auto& c : r.children) {
          auto pos = c.out.find("RESULT ");
          if (pos == std::string::npos) continue;
          auto j = nlohmann::json::parse(c.out.substr(pos + 7, c.out.find('\n', pos) - pos - 7));
          step = std::max(step, j["step_s"].get<double>());
          if (j["rank"] == 0) tps = j["tokens_per_s"].get<double>(), params = j["params"].get<double>();
          bytes = std::max(bytes, j["bytes_per_step"].get<double>());
          state = std::max(state, j["model_state"].get<double>());
          rss = std::max(rss, j["peak_rss_kb"].get<double>());
        }
        std::printf("| %s | %.1fM | %s | %s | %.3f | %.0f | %.2f | %.2f | %.0f |\n", m.c_str(), params / 1e6, st.c_str(),
                    w.c_str(), step, tps, bytes / 1e6, state / 1e6, rss / 1024.0);
        std::fflush(stdout);
      }
  return 0;
}
