// Encoding throughput of ftrun's byte-level BPE (data/bpe_tokenizer.*) on the golden corpus of
// tests/data/golden, with the real cl100k_base and Llama-3 vocabularies in each file form.
// bench/tokenizer_bench.mjs runs the same workloads through the npm packages tiktoken and
// llama3-tokenizer-js; bench/RESULTS.md records both.
//
//   tokenizer_bench [--repeat N] [--golden DIR]
//
// Workloads: "cold" = the whole corpus document once on a freshly loaded tokenizer (empty piece
// cache); "document xN" = the document repeated N times as one encode() call; "samples xN" = each
// corpus sample as its own encode() call, N rounds. Warm numbers are the best of 3 runs, since
// the machines this runs on are shared.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "testing/golden_files.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ftrun::data::BpeTokenizer;
using Clock = std::chrono::steady_clock;
using ftrun::testing::base64;
using ftrun::testing::gunzip;

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Row {
  std::string tokenizer, form, run;
  double load_ms;
  size_t bytes, tokens;
  double seconds;
};

void print(const std::vector<Row>& rows) {
  std::printf("%-16s %-15s %8s  %-14s %11s %10s %9s %8s\n", "tokenizer", "form", "load_ms", "run",
              "tokens", "seconds", "Mtok/s", "MB/s");
  for (const Row& r : rows)
    std::printf("%-16s %-15s %8.0f  %-14s %11zu %10.4f %9.3f %8.2f\n", r.tokenizer.c_str(),
                r.form.c_str(), r.load_ms, r.run.c_str(), r.tokens, r.seconds,
                r.tokens / r.seconds / 1e6, r.bytes / r.seconds / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 20;
  std::string golden = std::string(FTRUN_SOURCE_DIR) + "/tests/data/golden";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeat") && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--golden") && i + 1 < argc) {
      golden = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--repeat N] [--golden DIR]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::vector<std::string> samples;
    {
      std::ifstream in(golden + "/corpus.json");
      if (!in) throw std::runtime_error("cannot read " + golden + "/corpus.json");
      for (const json& s : json::parse(in)) samples.push_back(s.at("text").get<std::string>());
    }
    // The last sample is the whole document (every line joined).
    const std::string& document = samples.back();
    const std::vector<std::string> lines(samples.begin(), samples.end() - 1);
    std::string big;
    for (int r = 0; r < repeat; ++r) big += document;
    size_t line_bytes = 0;
    for (const std::string& s : lines) line_bytes += s.size();

    // Model directories in a scratch folder.
    const fs::path root =
        fs::temp_directory_path() / ("ftrun_tokenizer_bench_" + std::to_string(::getpid()));
    fs::create_directories(root);
    struct Dir {
      std::string name, path;
    };
    std::vector<Dir> dirs;
    {
      const std::string ranks = gunzip(golden + "/cl100k_base.tiktoken.gz");
      fs::create_directories(root / "cl100k");
      write(root / "cl100k" / "tokenizer.model", ranks);
      dirs.push_back({"cl100k_base", (root / "cl100k").string()});
      fs::create_directories(root / "cl100k_qwen2");
      write(root / "cl100k_qwen2" / "tokenizer.model", ranks);
      write(root / "cl100k_qwen2" / "tokenizer_config.json",
            R"({"tokenizer_class": "Qwen2Tokenizer"})");
      dirs.push_back({"cl100k+qwen2 re", (root / "cl100k_qwen2").string()});
      fs::create_directories(root / "llama3_json");
      write(root / "llama3_json" / "tokenizer.json", gunzip(golden + "/llama3.tokenizer.json.gz"));
      dirs.push_back({"llama3", (root / "llama3_json").string()});
      // Meta's original/tokenizer.model form, written from the tokenizer.json vocabulary.
      auto from = BpeTokenizer::load((root / "llama3_json").string());
      std::string model;
      for (int64_t id = 0; id < 128000; ++id)
        model += base64(from->token_bytes(id)) + " " + std::to_string(id) + "\n";
      fs::create_directories(root / "llama3_tiktoken");
      write(root / "llama3_tiktoken" / "tokenizer.model", model);
      dirs.push_back({"llama3", (root / "llama3_tiktoken").string()});
    }

    std::printf("corpus: %zu samples, %zu bytes; document %zu bytes; repeat %d\n", lines.size(),
                line_bytes, document.size(), repeat);
    std::vector<Row> rows;
    for (const Dir& d : dirs) {
      auto t0 = Clock::now();
      auto tok = BpeTokenizer::load(d.path);
      const double load_ms = seconds_since(t0) * 1e3;
      const std::string form = tok->source_format();

      t0 = Clock::now();
      const size_t cold_tokens = tok->encode(document).size();
      rows.push_back(
          {d.name, form, "cold", load_ms, document.size(), cold_tokens, seconds_since(t0)});

      double best = 1e30;
      size_t tokens = 0;
      for (int trial = 0; trial < 3; ++trial) {
        t0 = Clock::now();
        tokens = tok->encode(big).size();
        best = std::min(best, seconds_since(t0));
      }
      rows.push_back(
          {d.name, form, "document x" + std::to_string(repeat), load_ms, big.size(), tokens, best});

      best = 1e30;
      for (int trial = 0; trial < 3; ++trial) {
        tokens = 0;
        t0 = Clock::now();
        for (int r = 0; r < repeat; ++r)
          for (const std::string& s : lines) tokens += tok->encode(s).size();
        best = std::min(best, seconds_since(t0));
      }
      rows.push_back({d.name, form, "samples x" + std::to_string(repeat), load_ms,
                      line_bytes * repeat, tokens, best});
    }
    print(rows);
    std::error_code ec;
    fs::remove_all(root, ec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
