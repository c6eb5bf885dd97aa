// LM head + loss benchmark: the whole micro-batch's logits (forward() + causal_lm_loss_sum,
// what the trainer did before) against forward_loss (the labelled positions through the head
// in chunks, models/chunked_loss.h), on a ~60M-parameter Llama body with a 32,000 and a
// 151,552 (GLM-4) vocabulary, batch 1 x seq 1024, every token labelled, full fine-tuning
// gradients (forward + backward; no optimizer step, so the table isolates the loss). Prints
// one table: step time, peak RSS, and the peak above the RSS right after the model is built.
//   ninja -C build loss_bench && ./build/bench/loss_bench [--vocabs 32000,151552] [--steps 3]
//   ./build/bench/loss_bench [--vocabs ...] [--steps 3] --op    (the head + loss alone, by chunk size)
// Each case runs in a fresh process (this binary re-run with --case), so that peak RSS is
// the case's own.
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench_args.h"
#include "models/chunked_loss.h"
#include "models/model.h"
#include "testing/tiny.h"

using namespace ftrun;

namespace {

// kB from /proc/self/status ("VmHWM" = peak RSS since the last reset, "VmRSS" = now).
int64_t status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size() + 1, key + ":") == 0) return std::stoll(line.substr(key.size() + 1));
  return -1;
}

int run_case(int64_t vocab, const std::string& mode, int steps) {
  auto spec = ftrun::testing::tiny_spec(vocab, {512, 1408, 8, 4});
  spec.num_hidden_layers = 8;
  spec.max_position_embeddings = 1024;
  auto model = ftrun::testing::make_tiny_model({spec, 1});
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  const int64_t batch = 1, seq = 1024;
  auto ids = torch::randint(0, vocab, {batch, seq}, torch::kLong);
  auto mask = torch::ones({batch, seq}, torch::kLong);
  auto labels = ids.clone();
  const double n = double(batch * (seq - 1));
  auto one_step = [&] {
    for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor loss = mode == "full" ? models::causal_lm_loss_sum(model->forward(ids, mask), labels) / n
                                     : model->forward_loss(ids, mask, labels) / n;
    loss.backward();
    return loss.item<double>();
  };
  const int64_t base_kb = status_kb("VmRSS");
  { std::ofstream("/proc/self/clear_refs") << "5"; }  // VmHWM restarts from the current RSS
  double loss = one_step();  // warm-up (grads allocated, oneDNN/BLAS set up)
  // The fastest step: on a shared 2-core box the others measure the neighbours.
  double secs = 1e30;
  for (int s = 0; s < steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    loss = one_step();
    secs = std::min(secs, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::ostringstream os;
  os << "RESULT " << vocab << " " << mode << " " << params << " " << secs << " " << status_kb("VmHWM") << " "
     << base_kb << " " << loss;
  std::cout << os.str() << std::endl;
  return 0;
}

// The head + loss alone (hidden [1023, 512] -> vocab), forward + backward, for a few chunk
// sizes against mm + cross_entropy: the fastest of `steps` runs each.
void op_table(const std::vector<std::string>& vocabs, int steps) {
  std::printf("\n| vocab | head + loss alone | chunk tokens | fwd+bwd s (fastest of %d) |\n|---:|---|---:|---:|\n", steps);
  const int64_t N = 1023, H = 512;
  for (const auto& v : vocabs) {
    const int64_t V = std::stoll(v);
    auto hidden = (torch::randn({N, H})).requires_grad_(true);
    auto weight = (torch::randn({V, H}) * 0.02).requires_grad_(true);
    auto targets = torch::randint(0, V, {N}, torch::kLong);
    auto time = [&](int64_t chunk) {
      double best = 1e30;
      for (int s = 0; s < steps + 1; ++s) {  // the first run warms up
        hidden.mutable_grad() = at::Tensor();
        weight.mutable_grad() = at::Tensor();
        auto t0 = std::chrono::steady_clock::now();
        at::Tensor loss;
        if (chunk == 0)
          loss = torch::nn::functional::cross_entropy(
              torch::mm(hidden, weight.t()), targets,
              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
        else
          loss = models::chunked_linear_cross_entropy(hidden, weight, targets, chunk);
        loss.backward();
        double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (s > 0) best = std::min(best, t);
      }
      return best;
    };
    std::printf("| %lld | mm + cross_entropy | all %lld | %.3f |\n", (long long)V, (long long)N, time(0));
    for (int64_t chunk : {models::default_loss_chunk_tokens(V), int64_t(256), int64_t(512), N})
      std::printf("| %lld | chunked | %lld%s | %.3f |\n", (long long)V, (long long)chunk,
                  chunk == models::default_loss_chunk_tokens(V) ? " (default)" : "", time(chunk));
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string vocabs = "32000,151552";
  int steps = 3;
  bool op = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--case" && i + 3 < argc) return run_case(std::stoll(argv[i + 1]), argv[i + 2], std::stoi(argv[i + 3]));
    if (a == "--op") op = true;
    else if (a == "--vocabs" && i + 1 < argc) vocabs = argv[++i];
    else if (a == "--steps" && i + 1 < argc) steps = std::stoi(argv[++i]);
    else {
      std::cerr << "usage: loss_bench [--vocabs 32000,151552] [--steps 3] [--op]\n";
      return 2;
    }
  }
  if (op) {
    op_table(bench::split_list(vocabs), steps);
    return 0;
  }
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return 1;
  self[len] = 0;
  std::printf("| vocab | loss | params (M) | chunk tokens | step s (fwd+bwd, fastest) | peak RSS MB | peak - RSS after build MB | loss |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& v : bench::split_list(vocabs))
    for (const char* mode : {"full", "chunked"}) {
      std::string cmd = std::string(self) + " --case " + v + " " + mode + " " + std::to_string(steps);
      FILE* p = popen(cmd.c_str(), "r");
      if (!p) return 1;
      char buf[512];
      std::string out;
      while (fgets(buf, sizeof buf, p)) out += buf;
      pclose(p);
      auto at = out.find("RESULT ");
      if (at == std::string::npos) {
        std::printf("| %s | %s | failed |\n", v.c_str(), mode);
        continue;
      }
      std::istringstream in(out.substr(at + 7));
      int64_t vocab, params, hwm, base;
      std::string m;
      double secs, loss;
      in >> vocab >> m >> params >> secs >> hwm >> base >> loss;
      std::string chunk = m == "full" ? "all 1023" : std::to_string(models::default_loss_chunk_tokens(vocab));
      std::printf("| %lld | %s | %.1f | %s | %.2f | %.0f | %.0f | %.6f |\n", (long long)vocab,
                  m == "full" ? "forward() + causal_lm_loss_sum" : "forward_loss (chunked)", params / 1e6,
                  chunk.c_str(), secs, hwm / 1024.0, (hwm - base) / 1024.0, loss);
      std::fflush(stdout);
    }
  return 0;
}
