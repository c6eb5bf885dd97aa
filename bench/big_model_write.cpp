// big_model_write: writes a model of a real size with random bf16 weights in HF's sharded
// form (model-0000i-of-0000n.safetensors + model.safetensors.index.json), for
// bench/big_model_bench.sh (issue 13, Benchmarks 2). Streaming: each tensor's bytes are
// generated and written one chunk at a time, so a 9.4B model (18.8 GB) is written in ~100 MB.
//
// Usage: big_model_write TEMPLATE_DIR OUT_DIR [--shape glm-4-9b-chat] [--shard-bytes N] [--seed S]
//   TEMPLATE_DIR: a tiny GLM-4 from `ftrun make-tiny-model --model-type glm4` (its config.json
//   keys and its tokenizer files, whose ids are all < 151552, are reused). config.json gets
//   glm-4-9b-chat's sizes and torch_dtype bfloat16. Values: normal(0, 0.02), norms 1.
//   OUT_DIR/COMPLETE is written last; a directory that has it is left as it is.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "io/file.h"
#include "models/config.h"
#include "models/family.h"
#include "models/model.h"

namespace fs = std::filesystem;
using namespace ftrun;

namespace {

struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
};

// glm-4-9b-chat's config.json sizes (THUDM/glm-4-9b-chat, the GLM-4 demo's base).
void apply_glm4_9b(nlohmann::json& j) {
  j["_name_or_path"] = "THUDM/glm-4-9b-chat";
  j["num_layers"] = 40;
  j["num_hidden_layers"] = 40;
  j["hidden_size"] = 4096;
  j["ffn_hidden_size"] = 13696;
  j["kv_channels"] = 128;
  j["num_attention_heads"] = 32;
  j["multi_query_attention"] = true;
  j["multi_query_group_num"] = 2;
  j["padded_vocab_size"] = 151552;
  j["rope_ratio"] = 500;
  j["seq_length"] = 131072;
  j["add_qkv_bias"] = true;
  j["add_bias_linear"] = false;
  j["layernorm_epsilon"] = 1.5625e-07;
  j["torch_dtype"] = "bfloat16";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: big_model_write TEMPLATE_DIR OUT_DIR [--shard-bytes N] [--seed S]\n";
    return 2;
  }
  const fs::path tmpl = argv[1], out = argv[2];
  uint64_t shard_bytes = 2'000'000'000ull;  // glm-4-9b-chat ships 10 shards of about 1.9 GB
  uint64_t seed = 1;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--shard-bytes") shard_bytes = std::stoull(argv[i + 1]);
    else if (a == "--seed") seed = std::stoull(argv[i + 1]);
    else if (a == "--shape" && std::string(argv[i + 1]) == "glm-4-9b-chat") {
    } else {
      std::cerr << "big_model_write: unknown option " << a << "\n";
      return 2;
    }
  }
  try {
    if (fs::exists(out / "COMPLETE")) {
      std::cout << "big_model_write: " << out.string() << " is complete, reused\n";
      return 0;
    }
    fs::create_directories(out);
    auto j = io::read_json_file(tmpl / "config.json", "template config.json");
    apply_glm4_9b(j);
    auto cfg = models::parse_model_config(j, (out / "config.json").string());

    // Names and shapes from the model class itself, built without memory (uninitialised
    // storage is never touched, so nothing becomes resident).
    std::vector<Entry> entries;
    {
      models::EmptyInitScope scope(at::kBFloat16);
      auto m = models::family_for(cfg).build(cfg);
      for (const auto& p : m->named_parameters())
        entries.push_back({p.key(), p.value().sizes().vec(), p.value().numel()});
    }

    // Greedy shards in model order, as huggingface_hub splits them.
    std::vector<std::vector<const Entry*>> shards(1);
    uint64_t in_shard = 0, total = 0;
    for (const auto& e : entries) {
      const uint64_t b = uint64_t(e.numel) * 2;
      if (in_shard > 0 && in_shard + b > shard_bytes) {
        shards.emplace_back();
        in_shard = 0;
      }
      shards.back().push_back(&e);
      in_shard += b;
      total += b;
    }

    // A pool of normal(0, 0.02) bf16 values; each tensor copies runs of it from random
    // offsets (cheap, and every value is still a normal draw).
    torch::manual_seed(seed);
    const int64_t pool_n = int64_t(1) << 25;
    auto pool = (torch::randn({pool_n}) * 0.02).to(at::kBFloat16).contiguous();
    auto ones = torch::ones({1 << 16}, at::kBFloat16);
    std::mt19937_64 rng(seed);
    const auto* pool_ptr = static_cast<const char*>(pool.data_ptr());
    const auto t0 = std::chrono::steady_clock::now();

    nlohmann::json weight_map = nlohmann::json::object();
    const size_t n = shards.size();
    for (size_t s = 0; s < n; ++s) {
      char fname[64];
      std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, n);
      std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
      uint64_t off = 0;
      for (const Entry* e : shards[s]) {
        const uint64_t end = off + uint64_t(e->numel) * 2;
        std::string shape = "[";
        for (size_t k = 0; k < e->shape.size(); ++k) shape += (k ? "," : "") + std::to_string(e->shape[k]);
        header += "," + nlohmann::json(e->name).dump() + ":{\"dtype\":\"BF16\",\"shape\":" + shape +
                  "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(end) + "]}";
        off = end;
        weight_map[e->name] = fname;
      }
      header += "}";
      header.append((8 - header.size() % 8) % 8, ' ');
      const fs::path path = out / fname;
      io::write_atomic(path, [&](int fd) {
        const uint64_t hn = header.size();
        io::write_all(fd, &hn, 8, path);
        io::write_all(fd, header.data(), header.size(), path);
        for (const Entry* e : shards[s]) {
          const bool norm = e->name.find("norm") != std::string::npos;
          int64_t left = e->numel;
          while (left > 0) {
            if (norm) {
              const int64_t k = std::min<int64_t>(left, ones.numel());
              io::write_all(fd, ones.data_ptr(), size_t(k) * 2, path);
              left -= k;
            } else {
              const int64_t k = std::min<int64_t>(left, pool_n / 2);
              const int64_t start = int64_t(rng() % uint64_t(pool_n - k));
              io::write_all(fd, pool_ptr + start * 2, size_t(k) * 2, path);
              left -= k;
            }
          }
        }
      });
      std::cout << "big_model_write: " << path.string() << " (" << shards[s].size() << " tensors)" << std::endl;
    }
    io::write_json_atomic(out / "model.safetensors.index.json",
                          {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
    io::write_json_atomic(out / "config.json", j);
    for (const auto& f : fs::directory_iterator(tmpl)) {
      const auto name = f.path().filename().string();
      if (name == "config.json" || name.find("safetensors") != std::string::npos || !f.is_regular_file()) continue;
      io::write_file_atomic(out / name, io::read_text_file(f.path()));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    io::write_file_atomic(out / "COMPLETE", std::to_string(total) + "\n");
    std::printf("big_model_write: %zu tensors, %.3f G parameters, %.2f GB bf16 in %zu shards, %.0f s\n",
                entries.size(), double(total) / 2e9, double(total) / 1e9, n, secs);
  } catch (const std::exception& e) {
    std::cerr << "big_model_write: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
