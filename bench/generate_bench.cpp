// Generation benchmark: greedy continuation of chat prompts (examples/tiny/dev.jsonl through
// each model's chat template, as evaluation builds them) without a KV cache, with one, and
// batched (generate_batch), printing one table per run: model | mode | new tokens | seconds |
// tokens/s | first-token ms | same tokens. "same tokens" compares every mode's output, prompt
// by prompt, with generate() using the KV cache at batch 1, so the table is also a check that
// batching (left padding, masks, one cache) and the cache change nothing under greedy decoding.
//   ninja -C build generate_bench && ./build/bench/generate_bench [--model DIR]... [--data FILE]
//       [--new-tokens 64] [--prompts 32] [--batches 1,8,32] [--repeat 1] [--threads N] [--ignore-eos]
// Defaults: the tiny Llama (examples/tiny/model) and the tiny GLM-4 (examples/tiny/glm4-model).
// Prompts are the file's rows, cycled to --prompts. Generation stops at the template's stop ids
// and the model's eos (as evaluation does) unless --ignore-eos, which makes every prompt run
// the full --new-tokens. Seconds are wall time for all prompts, the best of --repeat runs after
// one warm-up prompt; first-token ms is the mean over generate()/generate_batch() calls of the
// time from the call to its first token(s) (prompt processing + one step), i.e. per prompt at
// batch 1 and per batch otherwise.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <sstream>

#include "bench/bench_args.h"
#include "runtime/evaluate.h"
#include "runtime/generate.h"

using namespace ftrun;

namespace {

using bench::split_list;

// A path as given when it exists relative to the working directory, else under the source tree.
std::string resolve(const std::string& p) {
  namespace fs = std::filesystem;
  if (fs::exists(p) || fs::path(p).is_absolute()) return p;
  auto alt = fs::path(FTRUN_SOURCE_DIR) / p;
  return fs::exists(alt) ? alt.string() : p;
}

struct Measured {
  std::vector<std::vector<int64_t>> outs;  // one per prompt
  double seconds = std::numeric_limits<double>::infinity();
  double first_ms = 0;
  int64_t tokens = 0;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// batch == 0: generate() per prompt (use_cache as given); else generate_batch() in chunks.
Measured run(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
             runtime::GenerateOptions o, bool use_cache, int64_t batch, int repeat) {
  o.use_cache = use_cache;
  Measured best;
  for (int rep = 0; rep < repeat; ++rep) {
    Measured m;
    double first_sum = 0;
    int calls = 0;
    double t0 = now();
    if (batch == 0) {
      for (const auto& p : prompts) {
        runtime::GenerateStats st;
        m.outs.push_back(runtime::generate(model, p, o, &st));
        first_sum += st.first_token_seconds;
        ++calls;
      }
    } else {
      for (size_t i = 0; i < prompts.size(); i += size_t(batch)) {
        std::vector<std::vector<int64_t>> chunk(prompts.begin() + std::ptrdiff_t(i),
                                                prompts.begin() + std::ptrdiff_t(std::min(prompts.size(), i + size_t(batch))));
        runtime::GenerateStats st;
        auto outs = runtime::generate_batch(model, chunk, o, nullptr, &st);
        for (auto& out : outs) m.outs.push_back(std::move(out));
        first_sum += st.first_token_seconds;
        ++calls;
      }
    }
    m.seconds = now() - t0;
    m.first_ms = calls ? 1000.0 * first_sum / calls : 0;
    for (const auto& out : m.outs) m.tokens += int64_t(out.size());
    if (m.seconds < best.seconds) best = std::move(m);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> model_dirs;
  std::string data = "examples/tiny/dev.jsonl", batches = "1,8,32";
  int64_t new_tokens = 64, n_prompts = 32;
  int repeat = 1, threads = 0;
  bool ignore_eos = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model") model_dirs.push_back(next());
    else if (a == "--data") data = next();
    else if (a == "--new-tokens") new_tokens = std::stoll(next());
    else if (a == "--prompts") n_prompts = std::stoll(next());
    else if (a == "--batches") batches = next();
    else if (a == "--repeat") repeat = std::max(1, std::stoi(next()));
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--ignore-eos") ignore_eos = true;
    else {
      std::cerr << "usage: generate_bench [--model DIR]... [--data FILE] [--new-tokens 64] [--prompts 32]\n"
                   "                      [--batches 1,8,32] [--repeat 1] [--threads N] [--ignore-eos]\n";
      return 2;
    }
  }
  if (model_dirs.empty()) model_dirs = {"examples/tiny/model", "examples/tiny/glm4-model"};
  if (threads > 0) torch::set_num_threads(threads);
  std::printf("threads: %d, prompts: %lld from %s, max new tokens: %lld%s, best of %d\n\n", torch::get_num_threads(),
              (long long)n_prompts, data.c_str(), (long long)new_tokens, ignore_eos ? " (eos ignored)" : "", repeat);
  std::printf("| model | mode | new tokens | seconds | tokens/s | first-token ms | same tokens |\n");
  std::printf("|---|---|---:|---:|---:|---:|---|\n");
  bool all_same = true;
  for (const auto& dir_in : model_dirs) {
    auto dir = resolve(dir_in);
    auto inf = runtime::load_for_inference(dir);
    auto rows = runtime::prediction_rows(resolve(data), *inf.chat_template, *inf.tokenizer, /*max_input_length=*/128);
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t i = 0; i < n_prompts; ++i) prompts.push_back(rows[size_t(i) % rows.size()].prompt);
    runtime::GenerateOptions o;
    o.max_new_tokens = new_tokens;
    if (!ignore_eos) o.stop_ids = runtime::eval_stop_ids(*inf.chat_template, *inf.tokenizer, inf.model->config());
    std::string name = std::filesystem::path(dir).filename().string() + " (" + inf.chat_template->name() + ")";
    // Warm-up: one prompt through each path.
    run(*inf.model, {prompts[0]}, o, true, 0, 1);
    run(*inf.model, {prompts[0]}, o, true, 1, 1);

    auto print = [&](const std::string& mode, const Measured& m, const std::string& same) {
      std::printf("| %s | %s | %lld | %.3f | %.0f | %.1f | %s |\n", name.c_str(), mode.c_str(), (long long)m.tokens,
                  m.seconds, m.tokens / m.seconds, m.first_ms, same.c_str());
      std::fflush(stdout);
    };
    auto ref = run(*inf.model, prompts, o, true, 0, repeat);
    auto nocache = run(*inf.model, prompts, o, false, 0, repeat);
    auto same = [&](const Measured& m) {
      bool eq = m.outs == ref.outs;
      all_same = all_same && eq;
      if (eq) return std::string("yes");
      int64_t differ = 0;
      for (size_t i = 0; i < ref.outs.size(); ++i) differ += m.outs[i] != ref.outs[i];
      return "no (" + std::to_string(differ) + " of " + std::to_string(ref.outs.size()) + " prompts)";
    };
    print("generate, no KV cache, batch 1", nocache, same(nocache));
    print("generate, KV cache, batch 1", ref, "(reference)");
    for (const auto& b : split_list(batches)) {
      auto m = run(*inf.model, prompts, o, true, std::stoll(b), repeat);
      print("generate_batch, batch " + b, m, same(m));
    }
  }
  return all_same ? 0 : 1;
}
